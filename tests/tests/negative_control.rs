//! Deliberately failing tests (feature `negative-control`): the runner must report each as failed.

#[test]
fn assertion_fails() {
    assert_eq!(1 + 1, 3, "negative control: this assertion must fail");
}

#[test]
fn hangs_until_killed() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
