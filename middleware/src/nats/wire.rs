//! The wire format of one revocation on the stream: a JSON object, version 1.
//!
//! ```text
//! {"v":1,"kind":"session","session":"<uuid>"}
//! {"v":1,"kind":"user_before","user":"<uuid>","before":<µs since the Unix epoch>,"except":"<uuid>"}
//! {"v":1,"kind":"all_before","before":<µs since the Unix epoch>,"except":"<uuid>"}
//! {"v":1,"kind":"everything"}
//! ```
//!
//! `except` is left out when no session is spared. `before` is an integer number of
//! microseconds (PostgreSQL's precision), so an instant survives the trip exactly.
//! Fields a kind does not use are refused, and so is any other `v`: a message this
//! version cannot read may be a revocation, and the feed treats it as one it missed.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::liveness::feed::Revocation;

/// The version this crate writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// Why a message is not a revocation this version understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a revocation message of version {WIRE_VERSION}: {0}")]
pub struct WireError(String);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    except: Option<String>,
}

/// `revocation` as a message body.
pub fn encode_revocation(revocation: &Revocation) -> Vec<u8> {
    let micros = |at: &SystemTime| {
        // Before the epoch covers no session the schema can hold: 0 says the same.
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            })
    };
    let text = |id: &Uuid| Some(id.to_string());
    let (kind, session, user, before, except) = match revocation {
        Revocation::Session { session } => ("session", text(session), None, None, None),
        Revocation::UserSessionsBefore {
            user,
            before,
            except,
        } => (
            "user_before",
            None,
            text(user),
            Some(micros(before)),
            except.as_ref().and_then(text),
        ),
        Revocation::AllSessionsBefore { before, except } => (
            "all_before",
            None,
            None,
            Some(micros(before)),
            except.as_ref().and_then(text),
        ),
        Revocation::Everything => ("everything", None, None, None, None),
    };
    let wire = Wire {
        v: WIRE_VERSION,
        kind: kind.to_owned(),
        session,
        user,
        before,
        except,
    };
    // A struct of strings and integers always serialises.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// A message body as a revocation.
pub fn decode_revocation(body: &[u8]) -> Result<Revocation, WireError> {
    let wire: Wire =
        serde_json::from_slice(body).map_err(|e| WireError(format!("not the JSON object: {e}")))?;
    if wire.v != WIRE_VERSION {
        return Err(WireError(format!("version {}", wire.v)));
    }
    let uuid = |field: &str, value: Option<String>| -> Result<Uuid, WireError> {
        let value = value.ok_or_else(|| WireError(format!("{} without {field}", wire.kind)))?;
        Uuid::parse_str(&value).map_err(|_| WireError(format!("{field} is not a UUID")))
    };
    let before = |value: Option<u64>| -> Result<SystemTime, WireError> {
        let micros = value.ok_or_else(|| WireError(format!("{} without before", wire.kind)))?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_micros(micros))
            .ok_or_else(|| WireError("before out of range".to_owned()))
    };
    let except = |value: Option<String>| value.map(|v| uuid("except", Some(v))).transpose();
    let unused = |present: bool, field: &str| {
        if present {
            Err(WireError(format!("{} with {field}", wire.kind)))
        } else {
            Ok(())
        }
    };
    match wire.kind.as_str() {
        "session" => {
            unused(wire.user.is_some(), "user")?;
            unused(wire.before.is_some(), "before")?;
            unused(wire.except.is_some(), "except")?;
            Ok(Revocation::Session {
                session: uuid("session", wire.session.clone())?,
            })
        }
        "user_before" => {
            unused(wire.session.is_some(), "session")?;
            Ok(Revocation::UserSessionsBefore {
                user: uuid("user", wire.user.clone())?,
                before: before(wire.before)?,
                except: except(wire.except.clone())?,
            })
        }
        "all_before" => {
            unused(wire.session.is_some(), "session")?;
            unused(wire.user.is_some(), "user")?;
            Ok(Revocation::AllSessionsBefore {
                before: before(wire.before)?,
                except: except(wire.except.clone())?,
            })
        }
        "everything" => {
            unused(
                wire.session.is_some()
                    || wire.user.is_some()
                    || wire.before.is_some()
                    || wire.except.is_some(),
                "a field it does not use",
            )?;
            Ok(Revocation::Everything)
        }
        other => Err(WireError(format!("unknown kind {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
    }

    #[test]
    fn every_kind_survives_the_trip() {
        let (session, user) = (Uuid::new_v4(), Uuid::new_v4());
        for revocation in [
            Revocation::Session { session },
            Revocation::UserSessionsBefore {
                user,
                before: at(1_765_000_000_123_456),
                except: None,
            },
            Revocation::UserSessionsBefore {
                user,
                before: at(1_765_000_000_123_456),
                except: Some(session),
            },
            Revocation::AllSessionsBefore {
                before: at(1),
                except: None,
            },
            Revocation::AllSessionsBefore {
                before: at(1_765_000_000_000_001),
                except: Some(session),
            },
            Revocation::Everything,
        ] {
            let body = encode_revocation(&revocation);
            assert_eq!(decode_revocation(&body), Ok(revocation.clone()), "{body:?}");
        }
    }

    #[test]
    fn the_documented_forms_are_what_is_written() {
        let session = Uuid::parse_str("7d3c2a4e-0000-4000-8000-000000000001").unwrap();
        let user = Uuid::parse_str("7d3c2a4e-0000-4000-8000-000000000002").unwrap();
        assert_eq!(
            String::from_utf8(encode_revocation(&Revocation::Session { session })).unwrap(),
            format!(r#"{{"v":1,"kind":"session","session":"{session}"}}"#)
        );
        assert_eq!(
            String::from_utf8(encode_revocation(&Revocation::UserSessionsBefore {
                user,
                before: at(1_765_000_000_123_456),
                except: Some(session),
            }))
            .unwrap(),
            format!(
                r#"{{"v":1,"kind":"user_before","user":"{user}","before":1765000000123456,"except":"{session}"}}"#
            )
        );
        assert_eq!(
            decode_revocation(br#"{"v":1,"kind":"all_before","before":5}"#),
            Ok(Revocation::AllSessionsBefore {
                before: at(5),
                except: None
            })
        );
        assert_eq!(
            String::from_utf8(encode_revocation(&Revocation::Everything)).unwrap(),
            r#"{"v":1,"kind":"everything"}"#
        );
    }

    #[test]
    fn anything_else_is_refused_without_panicking() {
        let user = Uuid::new_v4();
        for body in [
            String::new(),
            "null".to_owned(),
            "[]".to_owned(),
            "{}".to_owned(),
            "\u{0}garbage".to_owned(),
            r#"{"kind":"everything"}"#.to_owned(),
            r#"{"v":2,"kind":"everything"}"#.to_owned(),
            r#"{"v":-1,"kind":"everything"}"#.to_owned(),
            r#"{"v":1,"kind":"everything","session":"x"}"#.to_owned(),
            r#"{"v":1,"kind":"session"}"#.to_owned(),
            r#"{"v":1,"kind":"session","session":"not-a-uuid"}"#.to_owned(),
            r#"{"v":1,"kind":"session","session":7}"#.to_owned(),
            format!(r#"{{"v":1,"kind":"session","session":"{user}","user":"{user}"}}"#),
            format!(r#"{{"v":1,"kind":"user_before","user":"{user}"}}"#),
            format!(r#"{{"v":1,"kind":"user_before","user":"{user}","before":-5}}"#),
            format!(r#"{{"v":1,"kind":"user_before","user":"{user}","before":1.5}}"#),
            format!(r#"{{"v":1,"kind":"user_before","user":"{user}","before":1,"except":"no"}}"#),
            format!(r#"{{"v":1,"kind":"user_before","user":"{user}","before":1,"extra":1}}"#),
            r#"{"v":1,"kind":"all_before"}"#.to_owned(),
            format!(r#"{{"v":1,"kind":"all_before","before":1,"user":"{user}"}}"#),
            r#"{"v":1,"kind":"group_before","before":1}"#.to_owned(),
            format!(r#"{{"v":1,"kind":"session","session":"{user}"}} trailing"#),
        ] {
            assert!(decode_revocation(body.as_bytes()).is_err(), "{body:?}");
        }
        // u64::MAX microseconds is past what SystemTime holds on some platforms: refused
        // or understood, never a panic.
        let _ = decode_revocation(
            format!(
                r#"{{"v":1,"kind":"user_before","user":"{user}","before":{}}}"#,
                u64::MAX
            )
            .as_bytes(),
        );
    }
}
