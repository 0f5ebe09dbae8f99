//! The shell completions and man page committed under `completions/` are exactly what the
//! clap definition generates. After changing flags, refresh them with
//! `STREAMCTL_BLESS=1 cargo test -p streamctl --test completions`.

use std::path::PathBuf;

use streamctl::completions::{completion, file_name, man_page, man_subcommands, SHELLS};

fn check(path: PathBuf, generated: Vec<u8>) {
    if std::env::var_os("STREAMCTL_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run STREAMCTL_BLESS=1 cargo test -p streamctl --test completions",
        path.display()
    );
}

#[test]
fn completions_and_man_page_are_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../completions");
    for shell in SHELLS {
        check(dir.join(file_name(shell)), completion(shell));
    }
    check(dir.join("streamctl.1"), man_page(None).unwrap());
    for sub in man_subcommands() {
        let page = man_page(Some(&sub)).unwrap();
        let text = String::from_utf8_lossy(&page);
        assert!(
            text.contains("Exit status"),
            "streamctl-{sub}(1) names the exit codes"
        );
        check(dir.join(format!("streamctl-{sub}.1")), page);
    }
}

#[test]
fn value_hints_keep_file_names_out_of_completions() {
    let bash = String::from_utf8(completion(clap_complete::Shell::Bash)).unwrap();
    // `--log-format` completes its two values; `--format` is a template, not a file name.
    let case = |flag: &str| {
        let at = bash.find(&format!("                {flag})")).unwrap();
        bash[at..].lines().nth(1).unwrap().to_string()
    };
    assert!(case("--log-format").contains("compgen -W \"pretty json\""));
    assert!(
        !case("--format").contains("compgen -f"),
        "{}",
        case("--format")
    );
}
