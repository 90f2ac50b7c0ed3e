//! The sources against real servers: `git.rs` (git daemon, git http-backend
//! behind lighttpd, sshd) and `s3.rs` (Garage).

mod git;
mod s3;
