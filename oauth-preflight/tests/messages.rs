//! The sentences users see, pinned with insta on every platform. The words for stopping
//! differ between Unix (SIGTERM, SIGKILL) and Windows (TerminateProcess), so there is one
//! snapshot per family (`@unix`, `@windows`); the investigate hint differs on each OS, so
//! it is replaced by `<investigate>` and checked against `investigate_command` instead.

use oauth_preflight::{LookupMethod, Outcome, ProcessInfo, StartTime, investigate_command};

/// Which wording family this platform's messages use (the snapshot suffix).
fn platform_words() -> &'static str {
    if cfg!(windows) { "windows" } else { "unix" }
}

fn addr() -> std::net::SocketAddr {
    "127.0.0.1:1455".parse().unwrap()
}

fn codex() -> ProcessInfo {
    ProcessInfo::new(4242, "codex")
        .with_exe("/usr/local/bin/codex")
        .with_argv(["codex", "login"])
        .with_uid(1000)
        .with_start_time(StartTime(123_456))
}

fn all_outcomes() -> Vec<(&'static str, Outcome)> {
    let helper = "a Codex login helper".to_owned();
    let python = ProcessInfo::new(777, "python3")
        .with_exe("/usr/bin/python3.11")
        .with_argv(["python3", "-m", "http.server", "-d", "/home/me/codex"])
        .with_uid(1000);
    vec![
        (
            "free",
            Outcome::Free {
                addr: addr(),
                method: LookupMethod::Procfs,
            },
        ),
        (
            "freed_none_left",
            Outcome::Freed {
                addr: addr(),
                stopped: vec![],
                helper: helper.clone(),
                method: LookupMethod::Procfs,
            },
        ),
        (
            "would_free",
            Outcome::WouldFree {
                addr: addr(),
                holders: vec![codex()],
                helper: helper.clone(),
                method: LookupMethod::Procfs,
            },
        ),
        (
            "foreign",
            Outcome::HeldByForeign {
                addr: addr(),
                holder: python,
                helper: helper.clone(),
                method: LookupMethod::Procfs,
            },
        ),
        (
            "foreign_via_lsof",
            Outcome::HeldByForeign {
                addr: addr(),
                holder: ProcessInfo::new(31, "vscodex").with_uid(1000),
                helper,
                method: LookupMethod::Lsof,
            },
        ),
        (
            "caller_parent",
            Outcome::HeldByCaller {
                addr: addr(),
                holder: codex(),
                generation: 1,
                method: LookupMethod::SockDiag,
            },
        ),
        (
            "caller_self",
            Outcome::HeldByCaller {
                addr: addr(),
                holder: codex(),
                generation: 0,
                method: LookupMethod::SockDiag,
            },
        ),
        (
            "foreign_with_hostile_name",
            Outcome::HeldByForeign {
                addr: addr(),
                holder: ProcessInfo::new(666, "x\x1b]0;owned\x07\r\nFreed port\u{202e}")
                    .with_uid(1000),
                helper: "a Codex login helper".into(),
                method: LookupMethod::SockDiag,
            },
        ),
        (
            "other_user",
            Outcome::HeldByOtherUser {
                addr: addr(),
                holder: codex().with_uid(1001),
                our_uid: Some(1000),
                method: LookupMethod::Procfs,
            },
        ),
        (
            "unknown_holder",
            Outcome::HeldByUnknown {
                addr: addr(),
                socket: "[::]:1455".parse().unwrap(),
                socket_uid: Some(1001),
                method: LookupMethod::Procfs,
            },
        ),
        (
            "bind_failed",
            Outcome::BindFailed {
                addr: "192.0.2.1:1455".parse().unwrap(),
                kind: "AddrNotAvailable".into(),
                message: "Cannot assign requested address (os error 99)".into(),
            },
        ),
        (
            "still_held",
            Outcome::StillHeld {
                addr: addr(),
                stopped: vec![],
                waited_ms: 1500,
            },
        ),
        (
            "signal_failed",
            Outcome::SignalFailed {
                addr: addr(),
                holder: codex(),
                message: "Operation not permitted (os error 1)".into(),
                stopped: vec![],
            },
        ),
        (
            "unknown",
            Outcome::Unknown {
                addr: addr(),
                reason: "could not find out who listens on port 1455: lsof (fallback): `lsof` failed (exit status: 1): \x1b[31mboom\r\nFreed port 127.0.0.1:1455"
                    .into(),
            },
        ),
    ]
}

#[test]
fn user_facing_messages() {
    let text: String = all_outcomes()
        .iter()
        .map(|(name, o)| format!("{name}:\n  {o}\n"))
        .collect();
    let text = text.replace(&investigate_command(1455), "<investigate>");
    insta::with_settings!({ snapshot_suffix => platform_words() }, {
        insta::assert_snapshot!(text);
    });
}

#[test]
fn refusals_say_nothing_was_killed_and_how_to_investigate() {
    for (name, o) in all_outcomes() {
        if o.is_ready() || matches!(o, Outcome::StillHeld { .. } | Outcome::SignalFailed { .. }) {
            continue;
        }
        let msg = o.to_string();
        if name != "bind_failed" && name != "would_free" {
            assert!(msg.contains(&investigate_command(1455)), "{name}: {msg}");
        }
        assert!(
            msg.to_lowercase().contains("nothing was killed"),
            "{name}: {msg}"
        );
    }
}

#[test]
fn messages_hold_no_control_characters_and_one_line_each() {
    for (name, o) in all_outcomes() {
        let msg = o.to_string();
        assert!(
            !msg.chars().any(|c| c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "{name}: {msg:?}"
        );
    }
}

#[cfg(feature = "serde")]
#[test]
fn json_keeps_raw_values_and_stays_valid() {
    let (_, o) = all_outcomes()
        .into_iter()
        .find(|(n, _)| *n == "foreign_with_hostile_name")
        .unwrap();
    let text = serde_json::to_string(&o).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\n'), "{text}");
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back["holder"]["name"],
        "x\x1b]0;owned\x07\r\nFreed port\u{202e}"
    );
}

#[cfg(feature = "serde")]
#[test]
fn json_shape() {
    let json: Vec<serde_json::Value> = all_outcomes()
        .into_iter()
        .filter(|(n, _)| ["would_free", "other_user", "bind_failed"].contains(n))
        .map(|(_, o)| serde_json::to_value(o).unwrap())
        .collect();
    insta::assert_json_snapshot!(json);
}
