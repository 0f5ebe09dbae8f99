//! The accepting instance's side of idempotency keys (the rule itself is `idempotency`): a
//! key is checked, a request sent again with its key is answered from what is known
//! without storing it again where that can be known, and a request being stored is not
//! stored twice at once.
//!
//! What is known: this instance's own recent requests (in flight, or answered), then the key
//! index every instance follows. A repeat with the same body is answered 2xx `replayed`;
//! with another body, 422 `idempotency_key_reused` and nothing stored; while the first is
//! still being stored here, 409 `idempotency_key_in_flight` with Retry-After. A repeat this
//! instance cannot know of yet (its first went to another instance a moment ago) is stored,
//! and processing drops it: it never gets a result twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Refused;
use crate::idempotency::KeyIndex;
use crate::kafka::now_ms;
use crate::kafka::records::Keyed;
use crate::wire::Accepted;

/// Longest idempotency key, and the characters it may use (visible ASCII), as the IETF
/// httpapi draft gives them.
const MAX_KEY_LEN: usize = 255;

/// Requests this instance remembers answering, at most (the key index remembers the rest).
const RECENT: usize = 100_000;

/// A checked idempotency key.
pub fn check_key(key: &str) -> Result<&str, Refused> {
    let visible = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
        return Err(Refused::invalid(format!(
            "Idempotency-Key: must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces)"
        )));
    }
    Ok(key)
}

/// The digest of a request's body, as keyed records carry it: SHA-256, its first 16 bytes
/// (enough to tell two bodies apart; every record of the request carries it).
pub fn digest(body: &[u8]) -> String {
    Sha256::digest(body)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What this instance did with a key lately.
enum Local {
    InFlight {
        digest: String,
    },
    Answered {
        digest: String,
        accepted: Accepted,
        at_ms: i64,
    },
}

/// This instance's recent keyed requests, and the order they came in (the oldest are
/// forgotten first).
#[derive(Default)]
pub(super) struct Recent {
    requests: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_key: HashMap<(Uuid, String), Local>,
    order: VecDeque<(Uuid, String)>,
}

/// How a keyed request goes on.
pub(super) enum Check {
    /// Store it, as this attempt (the guard forgets it if it is not stored).
    Store(Keyed, Pending),
    /// Sent before with the same body: this is the answer.
    Replay(Accepted),
}

/// A keyed request being stored: forgotten unless [`Pending::answered`].
pub(super) struct Pending {
    recent: Arc<Recent>,
    key: (Uuid, String),
    answered: bool,
}

impl Pending {
    /// Stored: a repeat from now on is answered with `accepted`.
    pub fn answered(mut self, accepted: &Accepted) {
        let mut requests = self.recent.requests.lock().expect("recent keys lock");
        if let Some(Local::InFlight { digest }) = requests.by_key.remove(&self.key) {
            let accepted = Accepted {
                replayed: true,
                ..accepted.clone()
            };
            let answered = Local::Answered {
                digest,
                accepted,
                at_ms: now_ms(),
            };
            requests.by_key.insert(self.key.clone(), answered);
        }
        self.answered = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            let mut requests = self.recent.requests.lock().expect("recent keys lock");
            requests.by_key.remove(&self.key);
        }
    }
}

impl Recent {
    /// Checks a request with `key` whose body has `digest` and holds `parts` records; what
    /// this instance answered is remembered for `window_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        self: &Arc<Self>,
        index: &KeyIndex,
        window_ms: i64,
        stream: Uuid,
        partition: i32,
        key: &str,
        digest: String,
        parts: usize,
    ) -> Result<Check, Refused> {
        let reused = || Refused::KeyReused {
            key: key.to_string(),
        };
        let id = (stream, key.to_string());
        let mut requests = self.requests.lock().expect("recent keys lock");
        if let Some(Local::Answered { at_ms, .. }) = requests.by_key.get(&id) {
            if now_ms() - at_ms >= window_ms {
                requests.by_key.remove(&id); // past the window: new again
            }
        }
        match requests.by_key.get(&id) {
            Some(Local::InFlight { digest: d }) if *d == digest => {
                return Err(Refused::KeyInFlight {
                    key: key.to_string(),
                })
            }
            Some(Local::Answered {
                digest: d,
                accepted,
                ..
            }) if *d == digest => return Ok(Check::Replay(accepted.clone())),
            Some(_) => return Err(reused()),
            None => {}
        }
        if let Some(known) = index.get(&stream, key) {
            if known.digest != digest {
                return Err(reused());
            }
            if known.complete() {
                return Ok(Check::Replay(Accepted {
                    stream_id: stream,
                    records: known.parts as usize,
                    partition,
                    offsets: known
                        .offset0
                        .filter(|_| known.parts == 1)
                        .into_iter()
                        .collect(),
                    replayed: true,
                }));
            }
        }
        requests.by_key.insert(
            id.clone(),
            Local::InFlight {
                digest: digest.clone(),
            },
        );
        requests.order.push_back(id.clone());
        while requests.order.len() > RECENT {
            if let Some(old) = requests.order.pop_front() {
                if matches!(requests.by_key.get(&old), Some(Local::Answered { .. })) {
                    requests.by_key.remove(&old);
                }
            }
        }
        let keyed = Keyed {
            key: key.to_string(),
            attempt: Uuid::new_v4(),
            part: 0,
            parts: parts as u32,
            digest,
        };
        Ok(Check::Store(
            keyed,
            Pending {
                recent: self.clone(),
                key: id,
                answered: false,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(check_key("order-7:a/b").is_ok());
        for bad in ["", "has space", "é", &"x".repeat(256)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_repeat_here_is_answered_in_flight_replayed_or_reused() {
        let recent = Arc::new(Recent::default());
        let index = KeyIndex::memory(Duration::from_secs(60), 10);
        let stream = Uuid::new_v4();
        let check = |d: &str| recent.check(&index, 60_000, stream, 0, "k", d.into(), 1);
        let Ok(Check::Store(_, pending)) = check("a") else {
            panic!("a new key is stored")
        };
        assert!(matches!(check("a"), Err(Refused::KeyInFlight { .. })));
        assert!(matches!(check("b"), Err(Refused::KeyReused { .. })));
        pending.answered(&Accepted {
            stream_id: stream,
            records: 1,
            partition: 0,
            offsets: vec![7],
            replayed: false,
        });
        match check("a") {
            Ok(Check::Replay(a)) => assert!(a.replayed && a.offsets == [7]),
            _ => panic!("replayed"),
        }
        // A request that failed is forgotten: its retry is stored.
        let other = || recent.check(&index, 60_000, stream, 0, "k2", "a".into(), 1);
        drop(other());
        assert!(matches!(other(), Ok(Check::Store(..))));
    }
}
