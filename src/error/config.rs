//! [`ConfigError`]: the one error every builder returns for a setting that cannot hold.
//!
//! Each layer validates its own settings and names the setting that is wrong;
//! [`OpenRouterLayer`](crate::OpenRouterLayer) and the settings file
//! ([`Config`](crate::config::Config)) return the same type, with the key path as the field.
//!
//! ```
//! use std::time::Duration;
//! use tower_openrouter::error::ConfigError;
//!
//! let err = ConfigError::longer_than(
//!     "attempt_timeout",
//!     Duration::from_secs(90),
//!     "deadline",
//!     Duration::from_secs(60),
//! );
//! assert_eq!(err.field(), "attempt_timeout");
//! assert_eq!(err.to_string(), "attempt_timeout (90s) is longer than deadline (60s)");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A setting that cannot hold, found when a layer (or the whole stack) is built.
///
/// [`field`](ConfigError::field) names the setting (`"attempt_timeout"`,
/// `"backoff_cap"`); `Display` names it too and says what is wrong with it, e.g.
/// `attempt_timeout (90s) is longer than deadline (60s)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    message: String,
}

impl ConfigError {
    /// An error about `field`; `message` is the whole sentence and should name the field.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `field must be greater than zero`.
    pub fn zero(field: impl Into<Cow<'static, str>>) -> Self {
        let field = field.into();
        let message = format!("{field} must be greater than zero");
        ConfigError { field, message }
    }

    /// `field (value) is longer than other (other_value)`.
    pub fn longer_than(
        field: impl Into<Cow<'static, str>>,
        value: Duration,
        other: &str,
        other_value: Duration,
    ) -> Self {
        let field = field.into();
        let message = format!("{field} ({value:?}) is longer than {other} ({other_value:?})");
        ConfigError { field, message }
    }

    /// The setting that is wrong, as the builder method (or config key) spells it.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong, in one sentence that names the setting.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `Err(zero(field))` when `value` is zero.
pub(crate) fn positive(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::zero(field))
    } else {
        Ok(())
    }
}

/// `Err(longer_than(..))` when `value` is longer than `limit`.
pub(crate) fn not_longer(
    field: &'static str,
    value: Duration,
    other: &str,
    limit: Duration,
) -> Result<(), ConfigError> {
    if value > limit {
        Err(ConfigError::longer_than(field, value, other, limit))
    } else {
        Ok(())
    }
}
