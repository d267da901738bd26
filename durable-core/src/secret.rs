//! [`Secret<T>`]: a value that is never printed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A value (a password, an API key, a card number) that must not appear in logs.
///
/// What it guarantees, exactly:
///
/// - `Debug` and `Display` print `Secret(***)`, never the value, so `tracing` fields,
///   `{:?}` of a struct that holds one, panic messages and error texts built with
///   `format!` from it show no secret.
/// - It serializes as the bare inner value. In a run's history it is therefore as safe as
///   the rest of the payload: **set a [`PayloadCodec`](crate::PayloadCodec) that encrypts**
///   (`SqliteOptions::codec`), and its bytes are encrypted at rest in the database files.
///   Without a codec it is stored in clear, like every payload.
///
/// What it does not do: it does not hide the value from code that calls
/// [`Secret::expose`], from `history` and `history --export` (which decode payloads for
/// whoever holds the database and its codec), from `{:?}` of a
/// [`Payload`](crate::Payload) (which renders the decoded JSON), or from a JSON rendering
/// made by serializing it explicitly. It does not zero memory on drop.
///
/// ```
/// use durable_core::Secret;
/// let key = Secret::new(String::from("sk-live-123"));
/// assert_eq!(format!("{key:?} {key}"), "Secret(***) Secret(***)");
/// assert_eq!(key.expose(), "sk-live-123");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value; every read of it is a call to this method, easy to find in review.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, unwrapped.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Login {
        user: String,
        password: Secret<String>,
    }

    #[test]
    fn debug_and_display_hide_the_value_and_payloads_round_trip() -> Result<(), crate::PayloadError>
    {
        let login = Login {
            user: "ann".into(),
            password: Secret::new("hunter2".into()),
        };
        let shown = format!("{login:?} {}", login.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
        let p = Payload::encode(&login)?;
        assert_eq!(p.decode::<Login>()?, login);
        // The same bytes as the bare value: adding `Secret` to a field keeps old
        // histories readable.
        assert_eq!(
            Payload::encode(&Secret::new(7_u32))?,
            Payload::encode(&7_u32)?
        );
        Ok(())
    }
}
