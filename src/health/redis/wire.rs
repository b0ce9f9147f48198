//! What a replica writes to Redis and publishes: JSON values and messages, Lua scripts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::breaker::TripReason;
use super::super::store::{from_wall_ms, SharedEvent};

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Message {
    Trip {
        v: u32,
        replica: String,
        model: String,
        until_ms: u64,
        trips: u32,
        reason: String,
    },
    Recovered {
        v: u32,
        replica: String,
        model: String,
        until_ms: u64,
    },
}

/// The value of a trip key.
#[derive(Serialize, Deserialize)]
pub(super) struct TripValue {
    pub(super) v: u32,
    pub(super) replica: String,
    pub(super) until_ms: u64,
    pub(super) trips: u32,
    pub(super) reason: String,
}

impl TripValue {
    pub(super) fn event(self, model: &str) -> Option<SharedEvent> {
        Some(SharedEvent::Tripped {
            model: model.into(),
            until: from_wall_ms(self.until_ms),
            trips: self.trips,
            reason: TripReason::from_name(&self.reason)?,
        })
    }
}

impl Message {
    pub(super) fn event(self) -> Option<(String, SharedEvent)> {
        match self {
            Message::Trip {
                replica,
                model,
                until_ms,
                trips,
                reason,
                ..
            } => {
                let reason = TripReason::from_name(&reason)?;
                Some((
                    replica,
                    SharedEvent::Tripped {
                        model: model.into(),
                        until: from_wall_ms(until_ms),
                        trips,
                        reason,
                    },
                ))
            }
            Message::Recovered {
                replica,
                model,
                until_ms,
                ..
            } => Some((
                replica,
                SharedEvent::Recovered {
                    model: model.into(),
                    until: from_wall_ms(until_ms),
                },
            )),
        }
    }
}

/// Writes a trip unless the stored one ends later; publishes it when written. Returns
/// the trip in force (the stored one when it was longer).
pub(super) const TRIP_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, t = pcall(cjson.decode, cur)
  if ok and type(t) == 'table' and tonumber(t.until_ms) and tonumber(t.until_ms) >= tonumber(ARGV[1]) then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return ARGV[2]
"#;

/// A recovery: unless a later trip is stored, drop the trip, mark the probe slot
/// `recovered` and publish. Returns 1 when published.
pub(super) const RECOVER_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, t = pcall(cjson.decode, cur)
  if ok and type(t) == 'table' and tonumber(t.until_ms) and tonumber(t.until_ms) > tonumber(ARGV[1]) then
    return 0
  end
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], 'recovered', 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[2])
return 1
"#;

pub(super) fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
