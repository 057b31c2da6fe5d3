//! `poolsync`: keep PMDK pool sets and their replicas healthy.
//!
//! The binary is the library's [`poolsync::main`]: parse, dispatch, print,
//! and map the result to pmempool's exit codes (0 or 1).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    poolsync::main()
}
