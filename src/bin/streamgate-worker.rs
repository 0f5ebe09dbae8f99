//! A processor worker: runs jq filters for a daemon, one JSON line per request on stdin
//! (see `processing::sandbox` in the library). Started by the daemon, not by people.

fn main() -> std::process::ExitCode {
    streamgate::worker_main()
}
