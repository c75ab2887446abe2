//! A plugin's error: any error `?` meets, or a message of the plugin's own, carried to the host
//! as one line that keeps the whole chain of causes.

use std::fmt;
use std::sync::Arc;

/// The error a plugin returns; the host logs, meters and shows its message with plugin and
/// node.
///
/// `?` converts any `std::error::Error + Send + Sync + 'static` (serde, prost, your own) into
/// it, and the message keeps the error's chain of sources: `outer: inner: innermost` (a source
/// whose text the message already contains is not repeated). [`Error::msg`] makes one from
/// text.
///
/// Like `anyhow::Error`, it does not implement `std::error::Error` itself (that impl would
/// collide with the blanket conversion); it derefs to the error it was made from, so
/// `source()` and `downcast_ref::<E>()` reach the original. For the same reason `?` does not
/// convert a `String` or `&str`: write `Error::msg(text)`, or `.map_err(Error::msg)?`.
/// Two errors are equal when their messages are.
#[derive(Clone)]
pub struct Error {
    /// The error's text followed by its sources'.
    message: String,
    /// What the error was made from (a [`Message`] for [`Error::msg`]).
    error: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        let message = message.to_string();
        Error {
            error: Arc::new(Message(message.clone())),
            message,
        }
    }

    /// An error made from `error`, its message followed by those of its sources; what `?`
    /// does.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Error {
            message: chain_message(&error),
            error: Arc::new(error),
        }
    }

    /// The message, with the chain of sources.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `outer: inner: …`, skipping a source whose text is already in the message (errors that
/// print their source themselves, as thiserror's `{source}` does).
fn chain_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        next = source.source();
    }
    message
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Error::new(error)
    }
}

impl std::ops::Deref for Error {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.error
    }
}

impl AsRef<dyn std::error::Error + Send + Sync + 'static> for Error {
    fn as_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl AsRef<dyn std::error::Error + 'static> for Error {
    fn as_ref(&self) -> &(dyn std::error::Error + 'static) {
        &*self.error
    }
}

/// So that `?` takes a plugin's error into `Box<dyn Error>` (a native test's or tool's
/// `main`), with its whole message.
impl From<Error> for Box<dyn std::error::Error + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        Box::new(Message(error.message))
    }
}

impl From<Error> for Box<dyn std::error::Error + 'static> {
    fn from(error: Error) -> Self {
        Box::new(Message(error.message))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Error").field(&self.message).finish()
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Error {}

/// The error behind [`Error::msg`]: text and nothing else.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// The result of a plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
    use nebucloud_xds_proto::prost::{DecodeError, Message as _};

    use super::*;

    /// An error with a source, as a plugin author's own error type would have.
    #[derive(Debug)]
    struct Outer {
        source: std::io::Error,
    }

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading the policy")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    /// An error that prints its source in its own message.
    #[derive(Debug)]
    struct Verbose(Outer);

    impl fmt::Display for Verbose {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "policy p: {}", self.0)
        }
    }

    impl std::error::Error for Verbose {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn parse_port(json: &str) -> Result<u16> {
        let port: u16 = serde_json::from_str(json)?;
        Ok(port)
    }

    fn decode_cluster(body: &[u8]) -> Result<Cluster> {
        Ok(Cluster::decode(body)?)
    }

    #[test]
    fn question_mark_takes_a_serde_json_error_and_keeps_its_message() {
        let e = parse_port("70000").unwrap_err();
        assert_eq!(
            e.message(),
            "invalid value: integer `70000`, expected u16 at line 1 column 5"
        );
        assert!(e.downcast_ref::<serde_json::Error>().is_some(), "{e:?}");
    }

    #[test]
    fn question_mark_takes_a_prost_decode_error() {
        // Field 1 (`name`, length-delimited) announces 100 bytes and one follows.
        let e = decode_cluster(&[0x0a, 100, b'x']).unwrap_err();
        assert!(
            e.message().starts_with("failed to decode Protobuf message"),
            "{e}"
        );
        assert!(e.downcast_ref::<DecodeError>().is_some(), "{e:?}");
    }

    #[test]
    fn an_error_with_a_source_shows_the_chain_once() {
        let io = || std::io::Error::other("permission denied");
        let e = Error::from(Outer { source: io() });
        assert_eq!(e.to_string(), "loading the policy: permission denied");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("permission denied"),
            "deref reaches the original error and its sources"
        );
        let e = Error::from(Verbose(Outer { source: io() }));
        assert_eq!(
            e.to_string(),
            "policy p: loading the policy: permission denied",
            "a source already in the message is not repeated"
        );
    }

    #[test]
    fn messages_are_plain_text_and_errors_compare_by_message() {
        let e = Error::msg(format!("service {} has no port", "greeter"));
        assert_eq!(e.to_string(), "service greeter has no port");
        assert_eq!(format!("{e:?}"), r#"Error("service greeter has no port")"#);
        assert_eq!(e.clone(), Error::msg("service greeter has no port"));
        assert!(e.source().is_none());
        let text: std::result::Result<(), String> = Err("not a number".to_owned());
        assert_eq!(
            text.map_err(Error::msg).unwrap_err().message(),
            "not a number"
        );
    }

    #[test]
    fn question_mark_takes_it_into_a_boxed_error_with_the_whole_message() {
        fn main_like() -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err(Error::from(Outer {
                source: std::io::Error::other("gone"),
            }))?
        }
        let e = main_like().unwrap_err();
        assert_eq!(e.to_string(), "loading the policy: gone");
    }
}
