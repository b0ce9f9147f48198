//! Unit tests of the Redis store's pure parts (the Redis scenarios are in
//! `tests/redis_fleet.rs`).

use std::time::Duration;

use super::task::glob_escape;
use super::wire::{json, Message};
use super::*;
use crate::health::breaker::TripReason;
use crate::health::store::{from_wall_ms, SharedEvent};

#[test]
fn redact_drops_credentials_only() {
    assert_eq!(
        redact("redis://:hunter2@cache:6379/0"),
        "redis://***@cache:6379/0"
    );
    assert_eq!(
        redact("rediss://user:p%40ss@h.example/1"),
        "rediss://***@h.example/1"
    );
    assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redact("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    assert_eq!(redact("no url"), "<not a URL>");
}

#[test]
fn bad_settings_are_typed_errors_without_the_password() {
    let e = RedisStoreConfig::new("http://:hunter2@h")
        .validate()
        .unwrap_err();
    assert_eq!(e.field(), "redis_url");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = RedisStoreConfig::new("redis://h")
        .prefix("")
        .validate()
        .unwrap_err();
    assert_eq!(e.field(), "prefix");
    let e = RedisStoreConfig::new("redis://h")
        .reconcile(Duration::ZERO)
        .validate()
        .unwrap_err();
    assert_eq!(e.field(), "reconcile_ms");
    assert!(RedisStoreConfig::new("rediss://:x@h:6380/2")
        .validate()
        .is_ok());
    let debug = format!("{:?}", RedisStoreConfig::new("redis://:hunter2@h"));
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn glob_characters_are_escaped() {
    assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
}

#[test]
fn messages_round_trip_and_foreign_ones_are_refused() {
    let m = json(&Message::Trip {
        v: 1,
        replica: "r".into(),
        model: "a/b".into(),
        until_ms: 5,
        trips: 2,
        reason: "probe_failed".into(),
    });
    let (r, e) = serde_json::from_slice::<Message>(m.as_bytes())
        .unwrap()
        .event()
        .unwrap();
    assert_eq!(r, "r");
    assert_eq!(
        e,
        SharedEvent::Tripped {
            model: "a/b".into(),
            until: from_wall_ms(5),
            trips: 2,
            reason: TripReason::ProbeFailed
        }
    );
    for bad in [&b"hello"[..], br#"{"kind":"trip"}"#, br#"{"kind":"trip","v":1,"replica":"r","model":"m","until_ms":1,"trips":1,"reason":"bored"}"#] {
        assert!(serde_json::from_slice::<Message>(bad).ok().and_then(Message::event).is_none());
    }
}
