//! EAL init: once per process, and bad arguments give an error (never a
//! crash). A failed init can leave DPDK unable to init again in the same
//! process, so each bad-arguments case runs in a child process: this test
//! binary re-executed on the ignored `eal_child` test.

mod common;

use std::process::Command;

use dpdk_bindings::Eal;

const CHILD_ENV: &str = "FERROVS_EAL_CHILD_ARGS";
const CHILD_EXIT: i32 = 3;

/// Runs in the child: init the EAL with the given arguments; on error print
/// it and exit with CHILD_EXIT.
#[test]
#[ignore = "run by the bad-arguments tests in a child process"]
fn eal_child() {
    let args: Vec<String> = std::env::var(CHILD_ENV)
        .expect("set by the parent test")
        .split('\x1f')
        .map(str::to_owned)
        .collect();
    match Eal::init(&args) {
        Ok(_) => eprintln!("eal_child: EAL initialised"),
        Err(e) => {
            eprintln!("eal_child error: {e}");
            // A second init after a failure is refused or fails again, cleanly.
            let again = Eal::init(&args);
            eprintln!("eal_child second init: {:?}", again.map(|_| ()));
            std::process::exit(CHILD_EXIT);
        }
    }
}

/// Runs the child with `args` plus the test defaults; returns (exit code,
/// stderr). The child reports on stderr: DPDK prints its usage text through
/// buffered C stdout, which would interleave with our lines.
fn run_child(extra: &[&str]) -> (Option<i32>, String) {
    let mut args = common::test_eal_args(&[]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "eal_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, args.join("\x1f"))
        .output()
        .expect("spawn child");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr)
}

/// The child's report line starting at `marker`.
fn report<'a>(output: &'a str, marker: &str) -> &'a str {
    output
        .find(marker)
        .map(|i| output[i..].lines().next().unwrap_or_default())
        .unwrap_or_default()
}

fn assert_clean_failure(extra: &[&str], errno_text: &str) {
    let (code, stderr) = run_child(extra);
    assert_eq!(
        code,
        Some(CHILD_EXIT),
        "child must exit cleanly with an error, not crash:\n{stderr}"
    );
    let line = report(&stderr, "eal_child error:");
    assert!(line.contains("rte_eal_init"), "{stderr}");
    assert!(
        line.contains(errno_text),
        "expected {errno_text:?} in {line:?}"
    );
    assert!(
        line.contains(extra[0]),
        "the error names the arguments: {line:?}"
    );
    let second = report(&stderr, "eal_child second init:");
    assert!(second.contains("Err"), "{stderr}");
}

#[test]
fn good_args_init_in_a_child() {
    let (code, stderr) = run_child(&["--vdev", "net_null0"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("eal_child: EAL initialised"), "{stderr}");
}

#[test]
fn unknown_option_is_an_error() {
    assert_clean_failure(&["--no-such-eal-option"], "Invalid argument");
}

#[test]
fn bad_main_lcore_is_an_error() {
    assert_clean_failure(&["--main-lcore", "999"], "Invalid argument");
}

#[test]
fn unknown_vdev_driver_is_an_error() {
    let (code, stderr) = run_child(&["--vdev", "net_nosuchdriver0"]);
    assert_eq!(code, Some(CHILD_EXIT), "{stderr}");
    assert!(stderr.contains("eal_child error: rte_eal_init"), "{stderr}");
    assert!(stderr.contains("net_nosuchdriver0"), "{stderr}");
}

#[test]
fn init_is_once_per_process() {
    let eal = common::eal();
    assert!(Eal::get().is_some());
    assert!(eal.lcore_count() >= 1);
    let err = Eal::init(common::test_eal_args(&[])).unwrap_err();
    assert_eq!(err.errno(), libc::EALREADY);
    assert!(err.to_string().contains("already initialised"), "{err}");
}

#[test]
fn nul_in_argument_is_an_error() {
    // Checked before DPDK sees anything, so safe in-process.
    let err = Eal::init(["--vdev", "net_null\0"]).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
}
