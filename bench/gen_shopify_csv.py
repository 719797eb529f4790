#!/usr/bin/env python3
"""Generate a deterministic Shopify admin "Export orders" CSV (current 79-column header).

One row per line item; the first row of an order carries the order fields, later rows
only Name, Email, Created at, the Lineitem columns, Vendor and Phone (as Shopify writes
them). About 4 items per order; 5 % of orders refunded (filtered by the shopify-csv
preset); quoted multi-line Notes on 2 % of orders.

Usage: bench/gen_shopify_csv.py --rows 200000 --out bench/out/shopify-200k.csv
"""
import argparse
import csv
import random

HEADER = "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,Payment References".split(",")
IDX = {h: i for i, h in enumerate(HEADER)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    written, order = 0, 1000
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        while written < a.rows:
            order += 1
            n = min(rnd.randint(1, 7), a.rows - written)
            name = f"#{order}"
            created = f"2025-{1 + order % 12:02d}-{1 + order % 28:02d} {order % 24:02d}:{order % 60:02d}:{order % 59:02d} -0500"
            items = [(f"SKU-{rnd.randint(10000, 99999)}", f"Product {rnd.randint(1, 9999)}", rnd.randint(1, 4), f"{rnd.randint(1, 200)}.{rnd.randint(0, 99):02d}") for _ in range(n)]
            subtotal = sum(q * float(p) for _, _, q, p in items)
            for k, (sku, pname, qty, price) in enumerate(items):
                r = [""] * len(HEADER)
                r[IDX["Name"]] = name
                r[IDX["Email"]] = f"c{order}@example.com"
                r[IDX["Created at"]] = created
                r[IDX["Lineitem quantity"]] = str(qty)
                r[IDX["Lineitem name"]] = pname
                r[IDX["Lineitem price"]] = price
                r[IDX["Lineitem sku"]] = sku
                r[IDX["Lineitem requires shipping"]] = "true"
                r[IDX["Lineitem taxable"]] = "true"
                r[IDX["Lineitem fulfillment status"]] = "pending"
                r[IDX["Vendor"]] = "Acme"
                r[IDX["Phone"]] = "+1 555 0100"
                if k == 0:
                    r[IDX["Financial Status"]] = "refunded" if order % 20 == 0 else "paid"
                    r[IDX["Currency"]] = "USD"
                    r[IDX["Subtotal"]] = f"{subtotal:.2f}"
                    r[IDX["Shipping"]] = "5.00"
                    r[IDX["Taxes"]] = "0.00"
                    r[IDX["Total"]] = f"{subtotal + 5:.2f}"
                    r[IDX["Discount Amount"]] = "0.00"
                    r[IDX["Billing Name"]] = "Ana Example"
                    r[IDX["Billing Street"]] = "1 Main St"
                    r[IDX["Billing City"]] = "Springfield"
                    r[IDX["Billing Zip"]] = "'02759"
                    r[IDX["Billing Country"]] = "US"
                    r[IDX["Shipping City"]] = "Springfield"
                    r[IDX["Id"]] = str(6109234560000 + order)
                    r[IDX["Source"]] = "web"
                    if order % 50 == 0:
                        r[IDX["Notes"]] = "Leave at the door,\nthank you"
                        r[IDX["Note Attributes"]] = 'gift: {"wrap": true}'
                w.writerow(r)
                written += 1
    print(f"wrote {written} rows, {order - 1000} orders to {a.out}")


if __name__ == "__main__":
    main()
