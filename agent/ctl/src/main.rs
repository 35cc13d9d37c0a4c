//! `tvpctl`: CLI for tvpd. See `tvpctl --help`.

use clap::Parser;
use nix::sys::signal::{signal, SigHandler, Signal};

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes
    // away (`tvpctl ... | head`, `| grep -q`) instead of failing on EPIPE.
    // SAFETY: SIG_DFL installs no handler code; set before any thread starts.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let cli = tvpctl::Cli::parse();
    std::process::exit(tvpctl::run(cli));
}
