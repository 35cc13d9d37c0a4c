//! `tvpd`: the tvp host agent. See `tvpd --help` and docs/.

fn main() {
    // tpm2-tss logs to stderr on its own; tvpd reports TPM errors itself.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let args = tvp_agent::config::Args::from_command_line();
    std::process::exit(tvp_agent::daemon::run(args));
}
