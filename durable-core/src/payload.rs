//! Payload encoding: MessagePack with named fields (rmp-serde), self-describing so any
//! viewer can show a payload as JSON without the user's types.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fmt;
use std::sync::Arc;

/// The default largest encoded payload: 2 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;

/// The deepest nesting a payload may have when it is decoded: 128 levels, as for JSON
/// text (serde_json's limit), so every payload that came in as JSON decodes. rmp-serde's
/// own limit (1,024) is past what a 2 MiB thread stack holds in a debug build: a hostile
/// payload would abort the process instead of failing to decode.
pub const MAX_DEPTH: usize = 128;

fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

/// An encoded value: an input, output, signal body or error detail.
///
/// In MessagePack (the store) it is a byte string. In human-readable formats (a
/// history file) it is `{"json": <the value>, "msgpack": "<exact bytes in hex>"}`:
/// readable in a review, and exact on import. A hand-written file may give only `json`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
struct ReadablePayload {
    #[serde(default)]
    json: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    msgpack: Option<String>,
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            ReadablePayload {
                json: self.to_json().unwrap_or(serde_json::Value::Null),
                msgpack: Some(to_hex(&self.0)),
            }
            .serialize(serializer)
        } else {
            serde_bytes::Bytes::new(&self.0).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let r = ReadablePayload::deserialize(deserializer)?;
            match r.msgpack {
                Some(hex) => from_hex(&hex)
                    .map(Payload)
                    .map_err(serde::de::Error::custom),
                None => rmp_serde::to_vec_named(&r.json)
                    .map(Payload)
                    .map_err(serde::de::Error::custom),
            }
        } else {
            serde_bytes::ByteBuf::deserialize(deserializer).map(|b| Payload(b.into_vec()))
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("hex payload has an odd length ({})", s.len()));
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            u8::from_str_radix(text, 16).map_err(|_| format!("invalid hex digits {text:?}"))
        })
        .collect()
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_json() {
            Ok(v) => write!(f, "Payload({v})"),
            Err(_) => write!(f, "Payload({} bytes)", self.0.len()),
        }
    }
}

/// A payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The value could not be encoded.
    #[error("cannot encode {type_name}: {message}")]
    Encode {
        /// The Rust type being encoded.
        type_name: &'static str,
        /// What the encoder said.
        message: String,
    },
    /// The bytes do not decode into the declared type.
    #[error("payload does not decode into {type_name}: {message}")]
    Decode {
        /// The Rust type expected.
        type_name: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// JSON text given by a person or a script is not valid for the declared type.
    #[error("invalid JSON for {type_name}: {message}")]
    Json {
        /// The Rust type expected.
        type_name: &'static str,
        /// What the JSON parser said.
        message: String,
    },
    /// The encoded payload is larger than the configured limit.
    #[error("payload of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl Payload {
    /// Encodes a value as MessagePack with named fields.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Encode`] if serde refuses the value (for example a map with
    /// non-string keys that the format cannot hold).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        rmp_serde::to_vec_named(value)
            .map(Payload)
            .map_err(|e| PayloadError::Encode {
                type_name: std::any::type_name::<T>(),
                message: e.to_string(),
            })
    }

    /// Decodes the payload into `T`.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Decode`] if the bytes are not a valid `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        from_msgpack(&self.0).map_err(|e| PayloadError::Decode {
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// Parses JSON text into `T` and encodes it; the checked way in from a command line.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Json`] when the text is malformed or not a valid `T`.
    pub fn from_json_as<T: Serialize + DeserializeOwned>(json: &str) -> Result<Self, PayloadError> {
        let value: T = serde_json::from_str(json).map_err(|e| PayloadError::Json {
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })?;
        Payload::encode(&value)
    }

    /// Decodes the payload as `T` and renders it as JSON.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Decode`] if the bytes are not a valid `T`.
    pub fn to_json_as<T: Serialize + DeserializeOwned>(
        &self,
    ) -> Result<serde_json::Value, PayloadError> {
        let value: T = self.decode()?;
        serde_json::to_value(&value).map_err(|e| PayloadError::Encode {
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// Renders any payload as JSON without knowing its type (the encoding is
    /// self-describing). Byte strings become arrays of numbers.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Decode`] if the bytes are not MessagePack.
    pub fn to_json(&self) -> Result<serde_json::Value, PayloadError> {
        if self.0.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        from_msgpack::<serde_json::Value>(&self.0).map_err(|e| PayloadError::Decode {
            type_name: "json value",
            message: e.to_string(),
        })
    }

    /// Encodes arbitrary JSON without a declared type.
    ///
    /// # Errors
    ///
    /// [`PayloadError::Json`] when the text is malformed.
    pub fn from_json(json: &str) -> Result<Self, PayloadError> {
        Self::from_json_as::<serde_json::Value>(json)
    }

    /// The encoded size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses a payload over `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`PayloadError::TooLarge`] naming both sizes.
    pub fn check_size(&self, limit: usize) -> Result<(), PayloadError> {
        if self.0.len() > limit {
            Err(PayloadError::TooLarge {
                size: self.0.len(),
                limit,
            })
        } else {
            Ok(())
        }
    }

    /// A short, stable digest of the bytes, for divergence reports.
    pub fn digest(&self) -> String {
        // FNV-1a: stable across Rust versions (unlike std's hasher), enough to tell
        // two inputs apart in a report.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in &self.0 {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// A hook between the encoding and the store: compression or encryption of every event
/// body. It must be deterministic in what it decodes, not in what it encodes (a random
/// nonce is fine).
pub trait PayloadCodec: Send + Sync + 'static {
    /// Transforms bytes on their way into the store.
    fn encode(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// Reverses [`PayloadCodec::encode`].
    ///
    /// # Errors
    ///
    /// A message when the bytes were not produced by this codec (wrong key, corrupt data).
    fn decode(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String>;
}

/// A shared codec handle.
pub type SharedCodec = Arc<dyn PayloadCodec>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Order {
        id: String,
        qty: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct OrderV2 {
        id: String,
        qty: u32,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn round_trips_and_renders_json_without_types() -> Result<(), PayloadError> {
        let p = Payload::encode(&Order {
            id: "o-1".into(),
            qty: 3,
        })?;
        assert_eq!(
            p.decode::<Order>()?,
            Order {
                id: "o-1".into(),
                qty: 3
            }
        );
        assert_eq!(p.to_json()?, serde_json::json!({"id": "o-1", "qty": 3}));
        Ok(())
    }

    #[test]
    fn a_type_that_gains_an_optional_field_decodes_old_payloads() -> Result<(), PayloadError> {
        let p = Payload::encode(&Order {
            id: "o-1".into(),
            qty: 3,
        })?;
        let v2: OrderV2 = p.decode()?;
        assert_eq!(v2.note, None);
        Ok(())
    }

    #[test]
    fn wrong_json_type_is_refused_with_the_type_name() {
        let err = Payload::from_json_as::<Order>(r#"{"id": 5}"#).unwrap_err();
        assert!(err.to_string().contains("Order"), "{err}");
        let err = Payload::from_json_as::<Order>("{not json").unwrap_err();
        assert!(matches!(err, PayloadError::Json { .. }));
    }

    #[test]
    fn payloads_in_json_are_readable_and_exact() -> Result<(), Box<dyn std::error::Error>> {
        let p = Payload::encode(&Order {
            id: "o-1".into(),
            qty: 3,
        })?;
        let text = serde_json::to_string(&p)?;
        assert!(text.contains(r#""json":{"id":"o-1","qty":3}"#), "{text}");
        let back: Payload = serde_json::from_str(&text)?;
        assert_eq!(back, p);
        // A hand-written payload without the bytes is encoded from its JSON.
        let hand: Payload = serde_json::from_str(r#"{"json": {"id": "o-2", "qty": 1}}"#)?;
        assert_eq!(hand.decode::<Order>()?.id, "o-2");
        assert!(serde_json::from_str::<Payload>(r#"{"msgpack": "abc"}"#).is_err());
        // In MessagePack it stays a byte string.
        let packed = rmp_serde::to_vec_named(&p)?;
        assert!(packed.len() <= p.len() + 5, "{} bytes", packed.len());
        assert_eq!(rmp_serde::from_slice::<Payload>(&packed)?, p);
        Ok(())
    }

    #[test]
    fn nesting_past_the_limit_is_an_error_not_a_stack_overflow() {
        let nested = |depth: usize| {
            let mut bytes = vec![0x91; depth];
            bytes.push(0xc0);
            Payload(bytes)
        };
        assert!(nested(MAX_DEPTH / 2).to_json().is_ok());
        for depth in [MAX_DEPTH + 1, 1_000, 100_000] {
            assert!(nested(depth).to_json().is_err(), "{depth}");
            assert!(
                nested(depth).decode::<serde_json::Value>().is_err(),
                "{depth}"
            );
        }
    }

    #[test]
    fn size_limit_is_inclusive() -> Result<(), PayloadError> {
        let p = Payload(vec![0; 10]);
        p.check_size(10)?;
        assert!(matches!(
            p.check_size(9),
            Err(PayloadError::TooLarge { size: 10, limit: 9 })
        ));
        Ok(())
    }
}
