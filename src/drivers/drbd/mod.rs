//! The real DRBD driver (drbd-utils): resource files, `drbdadm`, and the observers that parse
//! `drbdsetup status --json` and `drbdsetup events2`.
