//! A test binary that exits non-zero without any libtest output (feature `negative-control`).

fn main() {
    eprintln!("negative control: exiting with status 3");
    std::process::exit(3);
}
