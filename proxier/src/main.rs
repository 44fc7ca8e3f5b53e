//! The `proxier` binary.

fn main() {
    println!("proxier {}", env!("CARGO_PKG_VERSION"));
}
