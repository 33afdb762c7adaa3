//! The Linux lookup bench (see `../lookup.rs`).
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use oauth_preflight::{HolderLookup, ProcfsLookup, SockDiagLookup, inspect};

const EXTRA_PROCESSES: usize = 200;
const EXTRA_SOCKETS: usize = 200;

/// Children and sockets that make the machine busy; killed and reaped on drop.
struct Crowd {
    children: Vec<Child>,
    _sockets: Vec<TcpListener>,
    holder: Child,
    port: u16,
    unlikely: Child,
    unlikely_port: u16,
    _unlikely_dir: tempfile::TempDir,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for c in self
            .children
            .iter_mut()
            .chain([&mut self.holder, &mut self.unlikely])
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const LISTEN_PY: &str = "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\nprint('ok', flush=True)\ntime.sleep(120)";

/// Starts `program` listening on a fresh ephemeral port; waits (bounded) until it listens.
fn listen_with(program: &std::path::Path) -> (Child, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    // `sleep 120` in the script bounds its life even if the bench is killed before Drop.
    let mut child = Command::new(program)
        .args(["-c", LISTEN_PY, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is installed by .ci/run");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ProcfsLookup::new()
        .find_listeners(port)
        .map(|h| h.is_empty())
        .unwrap_or(true)
    {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("holder did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.stdout.take();
    (child, port)
}

fn crowd() -> Crowd {
    // The worst case for the quick scan: an unlikely name, older than every crowd process.
    let dir = tempfile::tempdir().expect("temp dir");
    let python = std::fs::canonicalize(
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .expect("python3 is installed by .ci/run"),
    )
    .expect("python3 path");
    let unlikely_exe = dir.path().join("zz-holder");
    std::fs::copy(&python, &unlikely_exe).expect("copy python3");
    let (unlikely, unlikely_port) = listen_with(&unlikely_exe);
    // `sleep 120` bounds their life even if the bench is killed before Drop runs.
    let children = (0..EXTRA_PROCESSES)
        .filter_map(|_| {
            Command::new("sleep")
                .arg("120")
                .stdin(Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    let sockets = (0..EXTRA_SOCKETS)
        .filter_map(|_| TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    // The holder is another process, like a stale login helper would be.
    let (holder, port) = listen_with(std::path::Path::new("python3"));
    Crowd {
        children,
        _sockets: sockets,
        holder,
        port,
        unlikely,
        unlikely_port,
        _unlikely_dir: dir,
    }
}

fn lsof_ti(port: u16) -> Option<String> {
    let out = Command::new("lsof")
        .arg("-ti")
        .arg(format!("tcp:{port}"))
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mean(runs: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs
}

fn bench(c: &mut Criterion) {
    // Same comparison before the crowd exists, for scale.
    let quiet = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    let quiet_port = quiet.local_addr().expect("local addr").port();
    let quiet_native = mean(50, || {
        let _ = SockDiagLookup::new().find_listeners(quiet_port);
    });
    let quiet_lsof = lsof_ti(quiet_port).map(|_| {
        mean(5, || {
            let _ = lsof_ti(quiet_port);
        })
    });
    drop(quiet);

    let crowd = crowd();
    let port = crowd.port;
    let holder_pid = crowd.holder.id();
    let native = SockDiagLookup::new();
    let procfs = ProcfsLookup::new();
    for lookup in [&native as &dyn HolderLookup, &procfs] {
        let found = lookup.find_listeners(port).expect("native lookup");
        let pids: Vec<u32> = found
            .iter()
            .filter_map(|h| h.process.as_ref().map(|p| p.pid))
            .collect();
        assert!(pids.contains(&holder_pid), "{pids:?}");
    }

    let mut group = c.benchmark_group("holder_lookup");
    group.bench_function("native_quick_sock_diag", |b| {
        b.iter(|| native.find_first_holders(port))
    });
    group.bench_function("native_complete_sock_diag", |b| {
        b.iter(|| native.find_listeners(port))
    });
    group.bench_function("native_complete_proc_net_tcp", |b| {
        b.iter(|| procfs.find_listeners(port))
    });
    group.bench_function("inspect_with_bind_probe", |b| {
        b.iter(|| inspect(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
    });
    let lsof = lsof_ti(port);
    match &lsof {
        Some(out) => {
            assert!(
                out.contains(&holder_pid.to_string()),
                "lsof sees the holder: {out:?}"
            );
            group.bench_function("lsof_ti", |b| b.iter(|| lsof_ti(port)));
        }
        None => eprintln!("SKIP: lsof baseline: lsof is not installed"),
    }
    group.finish();

    // Same-run ratios from small manual loops (criterion's estimates are in target/criterion),
    // interleaved in rounds so a burst of load from other processes hits every contender.
    let unlikely_port = crowd.unlikely_port;
    let unlikely_pid = crowd.unlikely.id();
    let first = native
        .find_first_holders(unlikely_port)
        .expect("native lookup");
    assert_eq!(
        first
            .iter()
            .filter_map(|h| h.process.as_ref().map(|p| p.pid))
            .collect::<Vec<_>>(),
        [unlikely_pid]
    );
    let idle = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port();
    let mut quick = Duration::ZERO;
    let mut complete = Duration::ZERO;
    let mut procfs_total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    let mut query_only = Duration::ZERO;
    let mut lsof_total = Duration::ZERO;
    let mut lsof_worst = Duration::ZERO;
    const ROUNDS: u32 = 5;
    for _ in 0..ROUNDS {
        quick += mean(40, || {
            let _ = native.find_first_holders(port);
        });
        complete += mean(10, || {
            let _ = native.find_listeners(port);
        });
        procfs_total += mean(4, || {
            let _ = procfs.find_listeners(port);
        });
        // The socket query alone: nobody listens on `idle`, so no /proc/<pid>/fd scan follows.
        query_only += mean(40, || {
            let _ = native.find_first_holders(idle);
        });
        worst += mean(10, || {
            let _ = native.find_first_holders(unlikely_port);
        });
        if lsof.is_some() {
            lsof_total += mean(2, || {
                let _ = lsof_ti(port);
            });
            lsof_worst += mean(2, || {
                let _ = lsof_ti(unlikely_port);
            });
        }
    }
    let (quick, complete, procfs_mean, worst, query_only) = (
        quick / ROUNDS,
        complete / ROUNDS,
        procfs_total / ROUNDS,
        worst / ROUNDS,
        query_only / ROUNDS,
    );
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0);
    match quiet_lsof {
        Some(l) => println!(
            "before the crowd: native {quiet_native:?}, lsof {l:?} per call ({:.1}x)",
            l.as_secs_f64() / quiet_native.as_secs_f64().max(f64::MIN_POSITIVE)
        ),
        None => println!("before the crowd: native {quiet_native:?} per call"),
    }
    println!("machine: {processes} processes, {EXTRA_SOCKETS}+ extra listening sockets");
    println!("native quick (sock_diag, first holder; free's refusal):  {quick:?} per call");
    println!("native complete (sock_diag, every holder; inspect):      {complete:?} per call");
    println!("native complete (/proc/net/tcp, every holder):           {procfs_mean:?} per call");
    println!("native quick, unlikely holder older than the crowd:      {worst:?} per call");
    println!("sock_diag query alone (no holder, no scan):              {query_only:?} per call");
    if lsof.is_some() {
        let (lsof_mean, lsof_worst) = (lsof_total / ROUNDS, lsof_worst / ROUNDS);
        println!("lsof -ti tcp:PORT:                                       {lsof_mean:?} per call");
        let ratio =
            |l: Duration, d: Duration| l.as_secs_f64() / d.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "ratio: native quick lookup is {:.1}x faster than lsof (crowd)",
            ratio(lsof_mean, quick)
        );
        println!(
            "ratio: native complete lookup is {:.1}x faster than lsof (crowd)",
            ratio(lsof_mean, complete)
        );
        println!(
            "ratio: /proc/net/tcp complete lookup is {:.1}x faster than lsof (crowd)",
            ratio(lsof_mean, procfs_mean)
        );
        println!(
            "ratio: native quick lookup, unlikely old holder, is {:.1}x faster than lsof (crowd)",
            ratio(lsof_worst, worst)
        );
    }
    drop(crowd);
}

criterion_group!(benches, bench);

pub(crate) fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    benches_with(&mut c);
    c.final_summary();
}

fn benches_with(c: &mut Criterion) {
    bench(c);
}
