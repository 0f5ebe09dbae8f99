//! A processor worker: runs jq filters for a daemon, one JSON line per request on stdin
//! (see `streamgate::processing::sandbox`). Started by the daemon, not by people.

fn main() -> std::process::ExitCode {
    streamgate::processing::sandbox::worker_main()
}
