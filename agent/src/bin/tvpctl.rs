//! `tvpctl`: CLI for tvpd. See `tvpctl --help`.

use clap::Parser;

fn main() {
    let cli = tvp_agent::ctl::Cli::parse();
    std::process::exit(tvp_agent::ctl::run(cli));
}
