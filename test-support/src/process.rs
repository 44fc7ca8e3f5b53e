//! The `proxier` binary as a child process of a test: started with an empty environment, its
//! output collected, waited for, stopped; and its HTTP endpoints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::witness::{wait_for, witness, IPVSADM};

/// The `proxier` binary inside the VM (put there by `cargo xtask vmtest`).
pub const PROXIER: &str = "/usr/local/bin/proxier";

/// A running `proxier run` (or any proxier subcommand) in the calling thread's network
/// namespace, with an empty environment (`PATH=""`: it must execute nothing). Its stderr and
/// stdout are collected; the process is killed when the guard is dropped.
pub struct ProxierProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

/// Appends every line of `stream` to `log`.
fn collect(stream: impl Read, log: &Mutex<String>) {
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let mut log = log.lock().unwrap();
        log.push_str(&line);
        log.push('\n');
    }
}

impl ProxierProcess {
    /// Spawns `proxier ARGS` with `env_clear()`, `PATH=""` and `PROXIER_LOG=info`.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(PROXIER)
            .args(args)
            .env_clear()
            .env("PATH", "")
            .env("PROXIER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PROXIER} {args:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let out_sink = sink.clone();
            let out = std::thread::spawn(move || collect(stdout, &out_sink));
            collect(stderr, &sink);
            let _ = out.join();
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// `proxier run --source DIR --node node-a --min-sync-period 0s` plus `extra`.
    pub fn run(source: &Path, extra: &[&str]) -> Self {
        let source = source.to_str().expect("utf-8 path");
        let mut args = vec![
            "run",
            "--source",
            source,
            "--node",
            "node-a",
            "--min-sync-period",
            "0s",
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// The process id (to read `/proc/PID/...` as an outside witness).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("proxier exited early: {status}\n{}", self.log());
        }
    }

    /// Waits (20 s at most) until the log contains `needle` while the process keeps running;
    /// returns the log.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        wait_for(needle, Duration::from_secs(20), || {
            self.assert_running();
            let log = self.log();
            if log.contains(needle) {
                Ok(log)
            } else {
                Err(log)
            }
        })
    }

    /// Waits until `ipvsadm -Ln` satisfies `check`; panics after `timeout` with the listing and
    /// this process's log. Returns how long it took.
    pub fn wait_for_ipvs(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let listing = witness(IPVSADM, &["-Ln"]);
            if check(&listing) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "timed out waiting for {what}:\n{listing}\nproxier log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM, waits for the exit and returns the exit status and the whole log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }

    /// Runs `proxier ARGS` to completion (empty environment) and returns (success, output).
    pub fn oneshot(args: &[&str]) -> (bool, String) {
        let out = Command::new(PROXIER)
            .args(args)
            .env_clear()
            .env("PATH", "")
            .output()
            .unwrap_or_else(|e| panic!("run {PROXIER} {args:?}: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for ProxierProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on 127.0.0.1:`port` (proxier's metrics and health endpoints): the whole HTTP
/// response, or the error as text.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Writes a UDP Service `dns` at `vip`:53 (→ 5353) with endpoints 10.0.2.2 and 10.0.3.2 into the
/// fresh source directory `tag`, starts `proxier run` on it (cluster CIDR 10.0.0.0/8) and waits
/// for both real servers; returns the slice file (rewrite it to change endpoints) and the process.
pub fn run_two_backend_dns(tag: &str, vip: &str) -> (std::path::PathBuf, ProxierProcess) {
    use crate::yaml::{
        service_yaml, slice_yaml, source_dir, write_atomically, Endpoint, DNS_PORTS,
    };
    let source = source_dir(tag);
    write_atomically(
        &source.join("service.yaml"),
        &service_yaml("dns", vip, &[("dns", "UDP", 53, 5353, None)]),
    );
    let slice = source.join("slice.yaml");
    let endpoints = [Endpoint::ready("10.0.2.2"), Endpoint::ready("10.0.3.2")];
    write_atomically(&slice, &slice_yaml("dns", DNS_PORTS, &endpoints));
    let proxier = ProxierProcess::run(&source, &["--cluster-cidr", "10.0.0.0/8"]);
    proxier.wait_for_ipvs("both real servers", Duration::from_secs(20), |l| {
        l.contains("10.0.2.2:5353") && l.contains("10.0.3.2:5353")
    });
    (slice, proxier)
}
