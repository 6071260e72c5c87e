//! `dq`: look at and fix dq and Dramatiq queues from the shell. See `dq --help`.

fn main() {
    dq_cli::admin::main()
}
