//! Tower middleware that makes any HTTP client `Service` calling
//! [OpenRouter](https://openrouter.ai) survive what LLM APIs do every day: 429s,
//! provider outages, slow models, moderation refusals, context-length errors and streams
//! that die halfway.
//!
//! (Crate docs: skeleton.)
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod classify;
pub mod config;
pub mod error;
pub mod extensions;
pub mod fallback;
pub mod health;
#[cfg(feature = "mock")]
pub mod mock;
pub mod retry;
pub mod routing;
pub mod stack;
pub mod stream;
pub mod timeout;

pub use body::BufferRequestLayer;
pub use classify::{Classify, ClassifyLayer, OpenRouterClassifier};
pub use config::{Config, ConfigError};
pub use error::{Action, AttemptRecord, BoxError, Error, ErrorKind};
pub use extensions::{Attempt, AttemptLog, Deadline, StreamErrorHook, StreamLimits, UpstreamInfo};
pub use fallback::{Chain, ChainModel, ChainName, Chains, FallbackLayer, ServedBy};
pub use health::{HealthConfig, HealthLayer, HealthTracker};
pub use retry::{RetryLayer, RetryPolicy};
pub use routing::{NativeRoutingLayer, RoutingConfig};
pub use stack::{OpenRouter, OpenRouterLayer};
pub use timeout::{AttemptTimeoutLayer, DeadlineLayer};
