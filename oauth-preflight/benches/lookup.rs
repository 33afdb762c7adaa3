//! Holder lookup: native `/proc` vs `lsof -ti tcp:PORT` (what a user would otherwise run),
//! measured in the same run on a busy machine: 200 extra processes and 200 extra listening
//! sockets alive, plus the holder itself (a child process).
//!
//! `cargo bench -p oauth-preflight --bench lookup -- --warm-up-time 1 --measurement-time 2`

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
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for c in self
            .children
            .iter_mut()
            .chain(std::iter::once(&mut self.holder))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn crowd() -> Crowd {
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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    let holder = Command::new("python3")
        .args([
            "-c",
            "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\nprint('ok', flush=True)\ntime.sleep(120)",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is installed by .ci/run");
    let mut crowd = Crowd {
        children,
        _sockets: sockets,
        holder,
        port,
    };
    // Wait (bounded) until the holder is listening.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ProcfsLookup::new()
        .find_listeners(port)
        .map(|h| h.is_empty())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "holder did not listen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = crowd.holder.stdout.take();
    crowd
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
    group.bench_function("native_sock_diag", |b| {
        b.iter(|| native.find_listeners(port))
    });
    group.bench_function("native_proc_net_tcp", |b| {
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

    // Same-run ratio from a small manual loop (criterion's estimates are in target/criterion).
    let native_mean = mean(100, || {
        let _ = native.find_listeners(port);
    });
    let procfs_mean = mean(20, || {
        let _ = procfs.find_listeners(port);
    });
    // The socket query alone: nobody listens on `idle`, so no /proc/<pid>/fd scan follows.
    let idle = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port();
    let query_only = mean(100, || {
        let _ = native.find_listeners(idle);
    });
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
    println!("native sock_diag + /proc fd scan (default): {native_mean:?} per call");
    println!("native /proc/net/tcp + /proc fd scan:       {procfs_mean:?} per call");
    println!("sock_diag query alone (no holder, no scan): {query_only:?} per call");
    if lsof.is_some() {
        let lsof_mean = mean(10, || {
            let _ = lsof_ti(port);
        });
        println!("lsof -ti tcp:{port}:                        {lsof_mean:?} per call");
        let ratio = |d: Duration| lsof_mean.as_secs_f64() / d.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "ratio: default native lookup is {:.1}x faster than lsof",
            ratio(native_mean)
        );
        println!(
            "ratio: /proc/net/tcp lookup is {:.1}x faster than lsof",
            ratio(procfs_mean)
        );
    }
    drop(crowd);
}

criterion_group!(benches, bench);

fn main() {
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
