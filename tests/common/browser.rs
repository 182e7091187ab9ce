//! The headless browser the browser suites drive: Debian's `chromium`, which `make test`
//! installs (tests/system-deps.sh).

use std::path::PathBuf;

/// The Chromium binary (`CHROMIUM` overrides `/usr/bin/chromium`). Panics, naming the package
/// to install, when it is missing: a browser test that cannot run fails rather than passes.
pub fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "no {}: run `make test` as root, or `sudo apt-get install chromium`",
        path.display()
    );
    path
}
