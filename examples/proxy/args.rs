//! Command-line flags and environment settings.

#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) port: Option<u16>,
    pub(crate) upstream: Option<String>,
    pub(crate) config: Option<String>,
    pub(crate) threads: Option<usize>,
    pub(crate) mock_fail: Vec<(String, u16)>,
    pub(crate) redis: Option<String>,
}

pub(crate) fn usage() -> ! {
    eprintln!(
        "usage: proxy [--port N] [--upstream URL] [--config FILE] [--threads N] [--mock-fail MODEL=STATUS]... [--redis URL]"
    );
    std::process::exit(2)
}

pub(crate) fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (flag, None),
        };
        if name == "-h" || name == "--help" {
            usage();
        }
        let value = inline.or_else(|| it.next()).unwrap_or_else(|| usage());
        match name.as_str() {
            "--port" => args.port = Some(value.parse().unwrap_or_else(|_| usage())),
            "--upstream" => args.upstream = Some(value),
            "--config" => args.config = Some(value),
            "--redis" => args.redis = Some(value),
            "--threads" => args.threads = Some(value.parse().unwrap_or_else(|_| usage())),
            "--mock-fail" => {
                let (m, s) = value.rsplit_once('=').unwrap_or_else(|| usage());
                args.mock_fail
                    .push((m.to_owned(), s.parse().unwrap_or_else(|_| usage())));
            }
            _ => usage(),
        }
    }
    args
}

pub(crate) fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}
