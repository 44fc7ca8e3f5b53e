//! Flush the conntrack entries of one service VIP in the current network namespace:
//! `ip netns exec NAME cargo run -p conntrack-gc --example flush -- udp 10.96.0.10 53`.

use std::process::ExitCode;

use conntrack_gc::{Conntrack, ConntrackFilter, Protocol};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [proto, ip, port] = args.as_slice() else {
        eprintln!("usage: flush udp|tcp|sctp VIP PORT");
        return ExitCode::FAILURE;
    };
    let protocol = match proto.as_str() {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        "sctp" => Protocol::Sctp,
        other => {
            eprintln!("unknown protocol {other}");
            return ExitCode::FAILURE;
        }
    };
    let (Ok(ip), Ok(port)) = (ip.parse(), port.parse()) else {
        eprintln!("bad VIP or port");
        return ExitCode::FAILURE;
    };
    let result = Conntrack::open()
        .and_then(|mut ct| ct.flush(&[ConntrackFilter::service_ip(protocol, ip, port)]));
    match result {
        Ok(report) => {
            println!("{report:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flush failed: {e}");
            ExitCode::FAILURE
        }
    }
}
