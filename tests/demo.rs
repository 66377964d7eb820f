//! `rampart demo` as a user runs it: the in-process cluster converges the reference
//! manifests, loses a hypervisor, fences it, and fails its work over — with every invariant
//! held. Runs at a tenth of the manifests' timing so it takes a few seconds.

use std::process::Command;

fn demo(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("demo")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_reference_cluster_fails_over_when_a_hypervisor_dies() {
    let (code, out) = demo(&[
        "manifests",
        "--timescale",
        "0.1",
        "--kill",
        "alpha",
        "--timeout",
        "30",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SIMULATED"),
        "the demo says what is simulated: {out}"
    );
    assert!(out.contains("power failure of alpha (simulated)"), "{out}");
    assert!(out.contains("node alpha lost: its lease expired"), "{out}");
    assert!(
        out.contains("fence alpha level 1 via alpha-ipmi: confirmed off"),
        "{out}"
    );
    assert!(
        out.contains("beta       start vm files"),
        "files fails over to beta: {out}"
    );
    assert!(out.contains("invariants S1-S6 held throughout"), "{out}");
    assert!(out.contains("demo succeeded"), "{out}");
    let after = out
        .split("converged after the failure:")
        .nth(1)
        .expect("final table");
    // The fail-over VM runs on the survivor; the pinned ones on alpha are down.
    assert!(
        after
            .lines()
            .any(|l| l.trim_start().starts_with("files ") && l.contains("beta")),
        "{after}"
    );
    assert!(
        after
            .lines()
            .any(|l| l.trim_start().starts_with("ns1 ") && l.contains("DOWN")),
        "{after}"
    );
    assert!(
        after
            .lines()
            .any(|l| l.trim_start().starts_with("ns2 ") && l.contains("beta")),
        "{after}"
    );
}

#[test]
fn the_default_victim_is_the_busiest_hypervisor_and_the_web_address_follows() {
    let (code, out) = demo(&["manifests", "--timescale", "0.1", "--timeout", "30"]);
    assert_eq!(code, 0, "{out}");
    let after = out
        .split("converged after the failure:")
        .nth(1)
        .expect("final table");
    let www_node = after
        .lines()
        .find(|l| l.trim_start().starts_with("www "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("www row")
        .to_string();
    assert_ne!(www_node, "DOWN", "{after}");
    assert!(
        after.contains(&format!("on {www_node}")),
        "the VIP is where www runs: {after}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, out) = demo(&["manifests", "--kill", "witness"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("`witness` is not a hypervisor"), "{out}");
    let (code, out) = demo(&["no/such/dir"]);
    assert_eq!(code, 2, "{out}");
}

/// `rampart simulate` from the steady state (reached by planning alone): a failed hypervisor
/// is fenced, its fail-over VM restarts on the survivor, the pinned ones are reported down.
#[test]
fn simulate_a_hypervisor_failure_from_the_steady_state() {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["simulate", "manifests", "--fail", "alpha"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (start, after) = text.split_once("inject at").expect("a fault section");
    assert!(start.starts_with("start: steady state after"), "{start}");
    assert!(
        start.contains("files    alpha"),
        "files starts on alpha:\n{start}"
    );
    assert!(
        after.contains("fence alpha level 1 via alpha-ipmi: confirmed off"),
        "{after}"
    );
    assert!(
        after.contains("beta: promote volume files to primary"),
        "{after}"
    );
    assert!(after.contains("beta: start vm files"), "{after}");
    assert!(
        after.contains("ns1: down: alpha is lost and the vm may not fail over"),
        "{after}"
    );
    let fin = after.split_once("final after").expect("a final table").1;
    assert!(fin.contains("files    beta"), "files ends on beta:\n{fin}");
}
