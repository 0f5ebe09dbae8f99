//! The shipped example config stays loadable and documents the real defaults.

use streamgate::config::Config;

#[test]
fn example_config_loads_and_matches_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let example = Config::load(&path).unwrap();
    let defaults = Config::default();
    // Everything but the example key is the default, so the file documents real values.
    let mut example_value = serde_json::to_value(&example).unwrap();
    example_value["api_keys"] = serde_json::json!([]);
    assert_eq!(example_value, serde_json::to_value(&defaults).unwrap());
    assert_eq!(example.api_keys.len(), 1);
}

/// Every setting appears in the example file, so it documents them all (a new key without a
/// line there fails here).
#[test]
fn example_config_names_every_setting() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let written: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    fn missing(defaults: &serde_json::Value, written: &serde_json::Value, at: &str) -> Vec<String> {
        let serde_json::Value::Object(fields) = defaults else {
            return Vec::new();
        };
        fields
            .iter()
            .flat_map(|(k, v)| {
                let key = format!("{at}{k}");
                match written.get(k) {
                    None => vec![key],
                    // Maps of free-form settings (kafka) and null (disabled) have no sub-keys.
                    Some(w) if w.is_object() => missing(v, w, &format!("{key}.")),
                    Some(_) => Vec::new(),
                }
            })
            .collect()
    }
    assert_eq!(missing(&defaults, &written, ""), Vec::<String>::new());
}

#[test]
fn typo_in_a_key_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:9000\nrate_limits:\n  per_ipp: {per_second: 1, burst: 1}\n",
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("per_ipp"), "{err}");
    assert!(err.contains("bad.yaml"), "{err}");
}
