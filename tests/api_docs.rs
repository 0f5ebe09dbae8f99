//! The API's own descriptions: `/api/openapi.json` and `/api/asyncapi.json` are served without
//! a key, equal the committed copies in `docs/` (bless with `STREAMGATE_BLESS=1`), pass real
//! validators (`tests/api_docs/validate.py`: openapi-spec-validator, and the AsyncAPI 3.0 JSON
//! Schema), and name every frame the daemon sends.

use serde_json::Value;
use streamgate_testkit::*;

fn committed(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

/// What the daemon serves at `path`, without a key.
async fn served(d: &Daemon, path: &str) -> Value {
    let resp = d.http.get(d.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_documents_are_the_committed_ones_and_pass_their_validators() {
    let d = Daemon::start(test_config()).await;
    for (path, file) in [
        ("/api/openapi.json", "openapi.json"),
        ("/api/asyncapi.json", "asyncapi.json"),
    ] {
        let doc = served(&d, path).await;
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        let file = committed(file);
        if std::env::var_os("STREAMGATE_BLESS").is_some() {
            std::fs::write(&file, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} differs from what the daemon serves at {path}: \
             run STREAMGATE_BLESS=1 cargo test --test api_docs and commit it",
            file.display()
        );
    }

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_docs/validate.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(committed("openapi.json"))
        .arg(committed("asyncapi.json"))
        .output()
        .await
        .expect("python3 runs (the test command installs the validators)");
    assert!(
        out.status.success(),
        "validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_name_every_route_frame_and_close_code() {
    let d = Daemon::start(test_config()).await;
    let openapi = served(&d, "/api/openapi.json").await;
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in [
        "/api/stream/start",
        "/api/stream/{id}/send",
        "/api/stream/{id}/tokens",
        "/api/stream/{id}/results",
        "/api/stream/{id}",
        "/api/streams",
        "/api/stats",
        "/api/stats/live",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is described");
    }
    for scheme in ["api_key", "bearer", "access_token"] {
        assert!(openapi["components"]["securitySchemes"]
            .get(scheme)
            .is_some());
    }

    let asyncapi = served(&d, "/api/asyncapi.json").await;
    let messages = &asyncapi["components"]["messages"];
    for kind in ["result", "error", "end", "gap", "ack", "nack", "record"] {
        assert!(messages.get(kind).is_some(), "{kind} is a message");
    }
    // The frames' fields are the wire types' own.
    let outcome = &asyncapi["components"]["schemas"]["Outcome"]["properties"];
    for field in [
        "cursor",
        "stream_id",
        "input_partition",
        "input_offset",
        "data",
        "error",
    ] {
        assert!(outcome.get(field).is_some(), "Outcome.{field}");
    }
    let codes: Vec<u64> = asyncapi["channels"]["results"]["x-close-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_u64().unwrap())
        .collect();
    for code in [1000, 1001, 1009, 1011, 4008, 4401] {
        assert!(codes.contains(&code), "close code {code}");
    }
    d.stop().await.unwrap();
}
