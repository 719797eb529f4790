#!/usr/bin/env python3
"""Generate a deterministic order export in impact's column names, for benchmarking `check`.

Writes a CSV (LF line endings) with the header

    OrderId,EventDate,CurrencyCode,CustomerId,OrderPromoCode,ItemSku,ItemName,ItemCategory,ItemQuantity,ItemPrice

and exactly --rows data rows, one per item. Orders have 1 to 7 items (4 on average, so about
rows/4 orders); the order-level columns repeat on every row of an order. An order's rows are
adjacent, except that about 5% of orders have one of their item rows moved to a random later
position in the file, so the reader has to group non-adjacent rows. About 10% of item names
contain a comma (and so are quoted). Every value is valid: with a config that supplies
CampaignId, ActionTrackerId and MediaPartnerId, every order passes `impact-drop check`.

The same --rows and --seed always give the same bytes.

Usage: bench/gen_impact_csv.py [--rows N] [--seed S] --out PATH
"""

import argparse
import csv
import heapq
import random
import sys
from datetime import datetime, timedelta

HEADER = [
    "OrderId",
    "EventDate",
    "CurrencyCode",
    "CustomerId",
    "OrderPromoCode",
    "ItemSku",
    "ItemName",
    "ItemCategory",
    "ItemQuantity",
    "ItemPrice",
]

# (offset as written, offset in minutes). +00:00 appears both as "Z" and as "+00:00".
OFFSETS = [
    ("-08:00", -480),
    ("-05:00", -300),
    ("Z", 0),
    ("+00:00", 0),
    ("+01:00", 60),
    ("+05:30", 330),
]
CURRENCIES = ["USD", "USD", "USD", "EUR", "GBP"]
CATEGORIES = ["Apparel", "Home", "Books", "Toys", "Electronics", "Garden", "Beauty"]
COMMA_NAMES = [
    "Mug, large",
    "T-shirt, black, M",
    "Hoodie, grey, L",
    "Notebook, A5, dotted",
    "Lamp, desk",
    "Socks, 3 pairs",
    "Candle, vanilla",
    "Puzzle, 1000 pieces",
]
MOVE_SHARE = 0.05  # share of all orders that get one row moved later
MAX_ITEMS = 7


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="data rows (default 1000000)")
    ap.add_argument("--out", required=True, help="output CSV path ('-' for stdout)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = ap.parse_args(argv)
    if args.rows < 0:
        ap.error("--rows must be >= 0")

    if args.out == "-":
        orders, moved = generate(args.rows, args.seed, sys.stdout)
    else:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            orders, moved = generate(args.rows, args.seed, f)
    print(
        f"wrote {args.rows} rows, {orders} orders ({moved} with a row moved later) "
        f"to {args.out}",
        file=sys.stderr,
    )


def generate(total_rows, seed, f):
    rng = random.Random(seed)
    randint = rng.randint
    rand = rng.random
    choice = rng.choice

    w = csv.writer(f, lineterminator="\n")
    w.writerow(HEADER)
    writerow = w.writerow

    # Only orders with 2+ items can be split; 6 in 7 orders have 2+ items.
    move_p = MOVE_SHARE * MAX_ITEMS / (MAX_ITEMS - 1)
    base = datetime(2025, 11, 1, 0, 0, 0)
    span = 30 * 24 * 3600  # one month of event times

    pending = []  # heap of (insert after this many in-place rows, seq, row)
    in_place = 0  # in-place rows written so far
    generated = 0  # rows generated so far (in place or pending)
    orders = 0
    moved = 0
    seq = 0

    while generated < total_rows:
        orders += 1
        n_items = min(randint(1, MAX_ITEMS), total_rows - generated)
        generated += n_items

        order_id = f"ORD-{orders:010d}"
        off_text, off_min = OFFSETS[randint(0, len(OFFSETS) - 1)]
        local = base + timedelta(seconds=randint(0, span), minutes=off_min)
        event_date = local.strftime("%Y-%m-%dT%H:%M:%S") + off_text
        currency = choice(CURRENCIES)
        customer = f"cust-{randint(1, 200_000)}"
        promo = "WELCOME10" if rand() < 0.15 else ""
        order_cells = [order_id, event_date, currency, customer, promo]

        # Distinct SKUs within the order.
        sku0 = randint(10000, 99999 - MAX_ITEMS)
        rows = []
        for i in range(n_items):
            sku = sku0 + i
            name = choice(COMMA_NAMES) if rand() < 0.10 else f"Product {sku}"
            cents = randint(99, 49999)
            rows.append(
                order_cells
                + [
                    f"SKU-{sku}",
                    name,
                    CATEGORIES[sku % len(CATEGORIES)],
                    str(randint(1, 5)),
                    f"{cents // 100}.{cents % 100:02d}",
                ]
            )

        # Move one row of this order to a random later position. At least one row of
        # another order must follow, so skip orders too close to the end of the file.
        move_at = -1
        remaining = total_rows - generated
        if n_items >= 2 and remaining >= MAX_ITEMS + 1 and rand() < move_p:
            move_at = randint(0, n_items - 1)
            moved += 1

        for i, row in enumerate(rows):
            if i == move_at:
                continue
            writerow(row)
            in_place += 1
        # Moved rows go in between orders, never inside one.
        while pending and pending[0][0] <= in_place:
            writerow(heapq.heappop(pending)[2])

        if move_at >= 0:
            # After at least one more in-place row (of another order), up to the end.
            target = in_place + 1 + randint(0, remaining)
            seq += 1
            heapq.heappush(pending, (target, seq, rows[move_at]))

    while pending:
        writerow(heapq.heappop(pending)[2])
    return orders, moved


if __name__ == "__main__":
    main()
