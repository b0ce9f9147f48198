//! Wait hints from response headers: `Retry-After` (seconds or an HTTP date) and
//! OpenRouter's `X-RateLimit-Reset` (milliseconds since the Unix epoch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// Longest hint we accept, in seconds (about 31 years): anything larger is nonsense and
/// would overflow instant arithmetic downstream.
const MAX_HINT_SECS: u64 = 1_000_000_000;

/// Parses a `Retry-After` value: a non-negative number of seconds (`"3"`, also `"1.5"`) or
/// an HTTP date (IMF-fixdate, RFC 850 or asctime). A date in the past gives zero. `None`
/// for anything else.
///
/// ```
/// use std::time::Duration;
/// use tower_openrouter::classify::parse_retry_after;
///
/// assert_eq!(parse_retry_after(b"3"), Some(Duration::from_secs(3)));
/// assert_eq!(parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after(b"soon"), None);
/// ```
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Seconds; a huge number of digits is clamped, not rejected.
        let secs = s.parse::<u64>().unwrap_or(u64::MAX).min(MAX_HINT_SECS);
        return Some(Duration::from_secs(secs));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs = s.parse::<f64>().ok()?;
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_HINT_SECS as f64)));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(until(at))
}

/// Parses `X-RateLimit-Reset`: milliseconds since the Unix epoch. A reset in the past gives
/// zero.
pub fn parse_rate_limit_reset(value: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = s.parse::<u64>().ok()?;
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    Some(until(at))
}

/// The wait the headers ask for: `Retry-After` when present and valid, else
/// `X-RateLimit-Reset`.
///
/// ```
/// use std::time::Duration;
/// use tower_openrouter::classify::retry_after_from_headers;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("retry-after", "7".parse().unwrap());
/// assert_eq!(retry_after_from_headers(&h), Some(Duration::from_secs(7)));
/// ```
pub fn retry_after_from_headers(headers: &HeaderMap) -> Option<Duration> {
    if let Some(v) = headers.get(http::header::RETRY_AFTER) {
        if let Some(d) = parse_retry_after(v.as_bytes()) {
            return Some(d);
        }
    }
    headers
        .get("x-ratelimit-reset")
        .and_then(|v| parse_rate_limit_reset(v.as_bytes()))
}

fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(MAX_HINT_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_dates() {
        assert_eq!(parse_retry_after(b" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after(b"0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after(b"99999999999999999999999"),
            Some(Duration::from_secs(MAX_HINT_SECS))
        );
        assert_eq!(parse_retry_after(b"-1"), None);
        assert_eq!(parse_retry_after(b"1.2.3"), None);
        assert_eq!(parse_retry_after(b""), None);
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(future.as_bytes()).unwrap();
        assert!(
            d > Duration::from_secs(115) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }

    #[test]
    fn rate_limit_reset_is_ms_epoch() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let at = (now + Duration::from_secs(30)).as_millis().to_string();
        let d = parse_rate_limit_reset(at.as_bytes()).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_rate_limit_reset(b"1000"), Some(Duration::ZERO));
        assert_eq!(parse_rate_limit_reset(b"x"), None);
        assert_eq!(parse_rate_limit_reset(b"99999999999999999999999"), None);
    }

    #[test]
    fn retry_after_wins_over_reset() {
        let mut h = HeaderMap::new();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let at = (now + Duration::from_secs(60)).as_millis().to_string();
        h.insert("x-ratelimit-reset", at.parse().unwrap());
        assert!(retry_after_from_headers(&h).unwrap() > Duration::from_secs(50));
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after_from_headers(&h), Some(Duration::from_secs(2)));
        // An unparsable Retry-After falls back to the reset header.
        h.insert("retry-after", "later".parse().unwrap());
        assert!(retry_after_from_headers(&h).unwrap() > Duration::from_secs(50));
    }
}
