//! tvpd, the trusted virtualization platform host agent, and tvpctl, its CLI.
