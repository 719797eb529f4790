//! Hostile conditions through the real binary: misbehaving servers, a hostile drop folder, a
//! full disk under the ledger, secrets at every log level. Each asserts a clear outcome, that
//! the tool neither hangs nor crashes, and that no order is lost.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use impact_drop::impact::sandbox::Faults;

const SID: &str = "IRHOSTILE00000000000000000001";
const TOKEN: &str = "hostile-token-93e1";

/// A server on 127.0.0.1 that answers every connection with `respond` (in its own thread).
fn evil_server(respond: fn(&mut std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 8192];
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut buf);
                respond(&mut s);
            });
        }
    });
    format!("http://{addr}")
}

fn work(base_url: &str, extra: &str) -> tempfile::TempDir {
    let dir = workspace(&format!(
        "[source]\ndrop_dir = \"drop\"\n[impact]\nbase_url = \"{base_url}\"\naccount_sid = \"{SID}\"\n\
         requests_per_hour = 0\ntimeout_secs = 1\nconnect_timeout_secs = 1\nretry_cap_secs = 1\n\
         give_up_after_secs = 3\n{extra}\n[ledger]\npath = \"ledger.sqlite\"\n"
    ));
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    std::fs::write(dir.path().join("drop/orders.csv"), orders(1, 3, 1)).unwrap();
    dir
}

/// Adds keys to the `[source]` table of the work folder's config.
fn source_keys(dir: &Path, keys: &str) {
    let config = dir.join("impact-drop.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[source]\n", &format!("[source]\n{keys}\n"));
    std::fs::write(&config, text).unwrap();
}

/// Whether impact-drop can be run as `nobody` here (root and setpriv); says why not.
fn unprivileged_runs() -> bool {
    let ok = is_root() && Path::new("/usr/bin/setpriv").exists();
    if !ok {
        eprintln!("skipped: needs root and setpriv to run impact-drop as an unprivileged user");
    }
    ok
}

fn run(dir: &Path, args: &[&str]) -> (Run, Duration) {
    let start = Instant::now();
    let r = run_in(dir, args, &[("IMPACT_AUTH_TOKEN", TOKEN)]);
    (r, start.elapsed())
}

fn states(dir: &Path) -> Vec<String> {
    ledger_states(&dir.join("ledger.sqlite"))
        .into_values()
        .collect()
}

#[test]
fn a_server_that_never_answers_times_out_and_leaves_orders_pending() {
    let url = evil_server(|s| {
        // Accept, read, and never answer (hold the connection).
        std::thread::sleep(Duration::from_secs(30));
        let _ = s.flush();
    });
    let dir = work(&url, "");
    let (r, took) = run(dir.path(), &["run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        took < Duration::from_secs(20),
        "bounded by the timeouts: {took:?}"
    );
    assert!(r.stdout.contains("3 conversions pending"), "{}", r.stdout);
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
    assert_eq!(states(dir.path()), vec!["pending"; 3]);
}

#[test]
fn a_100_mb_answer_is_read_no_further_than_1_mib() {
    let url = evil_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n");
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..100 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let dir = work(&url, "");
    let (r, took) = run(dir.path(), &["run"]);
    // The body is cut at 1 MiB; a 2xx that is not impact's answer is never taken for an
    // acceptance: uncertain, resent at most twice, then held for the operator.
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        states(dir.path())
            .iter()
            .all(|s| s == "held" || s == "pending"),
        "{:?}",
        states(dir.path())
    );
}

#[test]
fn a_redirect_is_never_followed_and_stops_sending() {
    let url = evil_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/steal\r\nContent-Length: 0\r\n\r\n");
    });
    let dir = work(&url, "");
    let (r, _) = run(dir.path(), &["run"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("redirect to https://elsewhere.example/steal")
            && r.stderr.contains("base_url"),
        "{}",
        r.stderr
    );
    assert_eq!(states(dir.path()), vec!["pending"; 3], "nothing marked");
}

#[test]
fn garbage_bytes_are_uncertain_never_accepted() {
    let url = evil_server(|s| {
        let _ = s.write_all(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n");
    });
    let dir = work(&url, "");
    let (r, took) = run(dir.path(), &["run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(took < Duration::from_secs(20), "{took:?}");
    // The request went out before the garbage came back: impact may have it. Resent at most
    // twice, then held; never recorded as accepted.
    assert!(
        states(dir.path())
            .iter()
            .all(|s| s == "held" || s == "pending"),
        "{:?}",
        states(dir.path())
    );
}

#[test]
fn plain_http_is_refused_except_on_this_machine() {
    let dir = work("http://203.0.113.9", "");
    let (r, _) = run(dir.path(), &["run"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("plain http") && r.stderr.contains("https://"),
        "{}",
        r.stderr
    );
    assert!(
        !dir.path().join("ledger.sqlite").exists(),
        "refused before anything was recorded"
    );
}

#[test]
fn secrets_never_appear_at_trace_level_and_loose_permissions_are_warned() {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "auth_token_file = \"token\"");
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("token"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let _guard = rt.enter();
    // Every crate at trace level, HTTP client internals included.
    let r = run_in(dir.path(), &["-vv", "run"], &[("RUST_LOG", "trace")]);
    assert_eq!(
        r.code,
        0,
        "{}",
        r.stderr.chars().rev().take(3000).collect::<String>()
    );
    assert!(
        r.stderr
            .contains("others can read the token; run `chmod 600"),
        "permission warning missing"
    );
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains(TOKEN), "token in output");
        // Basic auth header value (base64 of SID:token) must not appear either.
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
        assert!(!text.contains(&basic), "Authorization header in output");
    }
    assert_eq!(sandbox.stats().accepted, 3);
}

#[test]
fn a_full_disk_under_the_ledger_stops_sending_marks_nothing_and_recovers() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    let disk = SmallDisk::mount(dir.path());
    let small = disk.0.clone();
    // Many orders, and a filler leaving the ledger too little room for their plan.
    std::fs::write(dir.path().join("drop/orders.csv"), orders(1, 3000, 2)).unwrap();
    std::fs::write(small.join("filler"), vec![0u8; 7_900_000]).unwrap();
    let _guard = rt.enter();
    let r = run_in(dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("the disk under the ledger small/ledger.sqlite is full: nothing more is sent and nothing was marked"), "{all}");
    assert_eq!(
        sandbox.stats().requests,
        0,
        "nothing sent while the ledger cannot record it"
    );

    // Space returns: everything goes, once.
    std::fs::remove_file(small.join("filler")).unwrap();
    let r = run_in(dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(sandbox.stats().accepted, 3000);
    assert!(sandbox.stats().duplicates.is_empty());
    drop(Faults::default());
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn a_hostile_drop_folder_names_links_fifos_and_empty_files() {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    let drop_dir = dir.path().join("drop");
    std::fs::remove_file(drop_dir.join("orders.csv")).unwrap();
    std::fs::write(drop_dir.join("orders_export (1).csv"), orders(1, 2, 1)).unwrap();
    std::fs::write(drop_dir.join("Bestellungen ü €.csv"), orders(3, 2, 1)).unwrap();
    std::fs::write(drop_dir.join("new\nline.csv"), orders(5, 2, 1)).unwrap();
    // A link to a file outside the folder is never followed.
    std::fs::write(dir.path().join("secret.csv"), orders(100, 2, 1)).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.csv"), drop_dir.join("outside.csv"))
        .unwrap();
    // A FIFO would block a reader forever; an empty file is not an export yet; a folder named
    // like an export is a folder.
    assert!(std::process::Command::new("mkfifo")
        .arg(drop_dir.join("pipe.csv"))
        .status()
        .unwrap()
        .success());
    std::fs::write(drop_dir.join("empty.csv"), "").unwrap();
    std::fs::create_dir(drop_dir.join("folder.csv")).unwrap();
    let _guard = rt.enter();
    let start = Instant::now();
    let r = run_in(dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)]);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "no hang on the FIFO"
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let sent: std::collections::BTreeSet<String> =
        sandbox.received().into_iter().map(|r| r.order_id).collect();
    assert_eq!(
        sent.into_iter().collect::<Vec<_>>(),
        vec!["O-1", "O-2", "O-3", "O-4", "O-5", "O-6"]
    );
    assert!(
        drop_dir.join("outside.csv").exists()
            && drop_dir.join("pipe.csv").exists()
            && drop_dir.join("empty.csv").exists()
    );
    assert!(std::fs::read_dir(drop_dir.join("processed"))
        .unwrap()
        .flatten()
        .next()
        .is_some());
}

/// Runs impact-drop under /usr/bin/time; returns the run and its peak RSS in KiB.
fn run_measured(dir: &Path, args: &[&str]) -> (Run, u64) {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "PEAK_RSS_KB=%M"])
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .env("IMPACT_AUTH_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .output()
        .expect("/usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rss = stderr
        .split("PEAK_RSS_KB=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(u64::MAX);
    (
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        },
        rss,
    )
}

#[test]
fn a_2_gb_file_and_a_gzip_bomb_are_refused_in_bounded_memory() {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    let drop_dir = dir.path().join("drop");
    // 2 GB, sparse: instant to make, refused by size before any read.
    let huge = std::fs::File::create(drop_dir.join("huge.csv")).unwrap();
    huge.set_len(2 << 30).unwrap();
    drop(huge);
    // 64 MiB of one endless line, compressed to a few kilobytes.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"OrderId,EventDate\n\"").unwrap();
    let zeros = vec![b'A'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    std::fs::write(drop_dir.join("bomb.csv.gz"), gz.finish().unwrap()).unwrap();
    source_keys(dir.path(), "max_file_bytes = 33554432");
    let _guard = rt.enter();
    let (r, peak_kib) = run_measured(dir.path(), &["run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("huge.csv")
            && r.stdout
                .contains("larger than [source] max_file_bytes (32 MiB)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("bomb.csv.gz") && r.stdout.contains("once decompressed"),
        "{}",
        r.stdout
    );
    assert!(peak_kib < 150 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    assert_eq!(sandbox.stats().accepted, 3, "the good file still goes");
}

#[test]
fn an_unreadable_file_costs_only_itself() {
    if !unprivileged_runs() {
        return;
    }
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    std::fs::write(dir.path().join("drop/secret.csv"), orders(50, 2, 1)).unwrap();
    // The work folder belongs to `nobody`; secret.csv stays root's, mode 0600.
    let chown = |p: &Path| {
        assert!(std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(p)
            .status()
            .unwrap()
            .success());
    };
    chown(dir.path());
    assert!(std::process::Command::new("chown")
        .args(["0:0"])
        .arg(dir.path().join("drop/secret.csv"))
        .status()
        .unwrap()
        .success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("drop/secret.csv"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let _guard = rt.enter();
    let out = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .arg("run")
        .current_dir(dir.path())
        .env("IMPACT_AUTH_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("secret.csv") && stdout.contains("Permission denied"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked"));
    assert_eq!(
        sandbox.stats().accepted,
        3,
        "the readable export still goes"
    );
    assert!(
        dir.path().join("drop/secret.csv").exists(),
        "left where it is"
    );
}

#[test]
fn a_file_truncated_while_read_is_not_recorded_and_is_read_again() {
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    // Ten orders of three items; truncation will cut order 6 in the middle.
    let full = orders(1, 10, 3);
    std::fs::write(dir.path().join("drop/orders.csv"), &full).unwrap();
    let hook = dir.path().join("hook");
    std::fs::create_dir(&hook).unwrap();
    let _guard = rt.enter();
    let child = command(dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)])
        .env("IMPACT_DROP_FAULT_HOOK_DIR", &hook)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !hook.join("hashed").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "intake never hashed the file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Between the hash and the read: cut the file in the middle of order 6.
    let cut: String = full
        .lines()
        .take(1 + 5 * 3 + 2)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("drop/orders.csv"), &cut).unwrap();
    std::fs::write(hook.join("go"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("the file changed while it was read; nothing was recorded"),
        "{stdout}"
    );
    assert_eq!(
        sandbox.stats().requests,
        0,
        "nothing sent from a read of changing content"
    );

    // Read again once settled: exactly the content that is there now.
    let r = run_in(dir.path(), &["run"], &[("IMPACT_AUTH_TOKEN", TOKEN)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let got: std::collections::BTreeMap<String, usize> = sandbox
        .received()
        .into_iter()
        .map(|r| (r.order_id, r.body.matches("ItemSku").count()))
        .collect();
    let expected: std::collections::BTreeMap<String, usize> = [
        ("O-1", 3),
        ("O-2", 3),
        ("O-3", 3),
        ("O-4", 3),
        ("O-5", 3),
        ("O-6", 2),
    ]
    .into_iter()
    .map(|(o, n)| (o.to_string(), n))
    .collect();
    assert_eq!(got, expected);
}

/// A file `watch` could not read (permissions) is tried again on later rescans with a
/// backoff, without a change to the file and without a restart: after `chmod 644` it goes.
#[test]
fn an_unreadable_file_made_readable_is_picked_up_by_watch() {
    if !unprivileged_runs() {
        return;
    }
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    source_keys(dir.path(), "settle_secs = 0.2\nrescan_secs = 1");
    std::fs::remove_file(dir.path().join("drop/orders.csv")).unwrap();
    assert!(std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success());
    let secret = dir.path().join("drop/secret.csv");
    std::fs::write(&secret, orders(70, 2, 1)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _guard = rt.enter();
    let (mut child, log) = spawn_watch(dir.path(), true);
    wait_until("the read failure", &log, &|| {
        log.lock().unwrap().contains("tried again in")
    });
    assert_eq!(sandbox.stats().accepted, 0);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_until("the file sent", &log, &|| sandbox.stats().accepted == 2);
    let _ = child.kill();
    let _ = child.wait();
}

/// The log a spawned daemon writes, collected line by line.
type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// Spawns `impact-drop watch` in `dir` (as `nobody` through setpriv when `unprivileged`),
/// with its stderr collected into the returned log.
fn spawn_watch(dir: &Path, unprivileged: bool) -> (std::process::Child, Log) {
    let mut cmd = if unprivileged {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(BIN);
        c
    } else {
        std::process::Command::new(BIN)
    };
    let mut child = cmd
        .arg("watch")
        .current_dir(dir)
        .env("IMPACT_AUTH_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log: Log = Default::default();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (child, log)
}

/// A small tmpfs mounted at `dir/small`, holding the work folder's ledger, for the test's
/// life (unmounted when dropped).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        let config = dir.join("impact-drop.toml");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("path = \"ledger.sqlite\"", "path = \"small/ledger.sqlite\"");
        std::fs::write(&config, text).unwrap();
        let small = dir.join("small");
        std::fs::create_dir(&small).unwrap();
        assert!(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&small)
            .status()
            .unwrap()
            .success());
        SmallDisk(small)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn wait_until(what: &str, log: &Log, cond: &dyn Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ledger's disk fills up while `watch` is sending: no POST starts while answers cannot
/// be recorded (they are kept in memory), sending resumes by itself once there is room, and
/// no order is accepted twice.
#[test]
fn a_full_disk_under_watch_stops_sending_until_answers_can_be_recorded() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let (rt, sandbox) = sandbox(SID, TOKEN);
    let dir = work(&sandbox.base_url(), "");
    std::fs::remove_file(dir.path().join("drop/orders.csv")).unwrap();
    let disk = SmallDisk::mount(dir.path());
    let small = disk.0.clone();
    source_keys(dir.path(), "settle_secs = 0.2\nrescan_secs = 1");
    sandbox.set_faults(Faults {
        latency_ms: 15,
        ..Faults::default()
    });
    let _guard = rt.enter();
    let (mut child, log) = spawn_watch(dir.path(), false);
    std::fs::write(dir.path().join("drop/orders.csv"), orders(1, 400, 1)).unwrap();
    wait_until("sending under way", &log, &|| {
        sandbox.stats().accepted >= 40
    });
    // Fill the disk under the ledger.
    {
        let mut f = std::fs::File::create(small.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    wait_until("the alarm", &log, &|| {
        log.lock()
            .unwrap()
            .contains("kept in memory until they can be recorded")
    });
    let at_alarm = sandbox.stats().requests;
    wait_until("two more attempts to record", &log, &|| {
        log.lock()
            .unwrap()
            .matches("trying again to record")
            .count()
            >= 3
    });
    assert_eq!(
        sandbox.stats().requests,
        at_alarm,
        "no POST while answers cannot be recorded"
    );
    std::fs::remove_file(small.join("filler")).unwrap();
    wait_until("every order accepted", &log, &|| {
        sandbox.stats().accepted >= 400
    });
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for r in sandbox.received() {
        *counts.entry(r.order_id).or_default() += 1;
    }
    assert_eq!(counts.len(), 400);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "accepted twice: {twice:?}");
    let _ = child.kill();
    let _ = child.wait();
}
