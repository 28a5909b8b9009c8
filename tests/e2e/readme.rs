//! The README's examples, run exactly as written: every `sh` block of README.md, in order,
//! in one bash session (`set -euo pipefail`, so a failing line fails the test) whose working
//! directory holds the `.modvisor` of a `modvisor up --nodes 2` listening on the README's
//! own address, with this build's `modvisor` first on PATH. A comment line right before a
//! block may say `<!-- readme test: not run ... -->` (with the reason) or `<!-- readme
//! test: each line runs for N s, then is stopped -->` (commands that follow until Ctrl-C).
//! What each block prints is checked against [`EXPECTED`].

use crate::host::HostCleanup;
use crate::support::{guest_release, Plane};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The address the README's examples call.
const README_LISTEN: &str = "127.0.0.1:7070";
/// How long one block may take (boots under TCG, `--wait`s).
const BLOCK_SECS: u64 = 420;

/// Per block (found by a line of it): what its output must contain.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "$API/v1/modules          # what A may request",
        &["\"name\":\"web-1\"", "\"items\"", "tcp_bbr"],
    ),
    ("$API/v1/vms/$WEB1        # 404", &["\"status\":404"]),
    ("$WEB2/modules", &["tcp_bbr"]),
    (
        "# 403, stored as Rejected",
        &[
            "\"approved\":true",
            "\"tenant-a\"",
            "\"state\":\"Pending\"",
            "\"status\":403",
            "module.request",
        ],
    ),
    ("$API/v1/stream", &["event: vm", "web-2"]),
    (
        "modvisor whoami                                      # tenant-a",
        &["tenant-a", "web-1", "web-2", "dummy", "node-1", "node-2"],
    ),
    (
        "modvisor vm create web-3",
        &["web-3", "Running", "tcp_bbr", "Loaded", "dummy"],
    ),
    ("modvisor vm list --watch", &["web-1", "vm."]),
    (
        "sh -c 'exit 7' || echo $?",
        &["\n7\n", "detached", "uid=0", "\"exit_code\":0"],
    ),
    ("httpd -p 80", &["hi\n", "unreachable"]),
    (
        "modvisor module keygen --name",
        &[
            "acme.pem",
            "khttpd.ko",
            "signed by CN=acme modules",
            "accepted",
        ],
    ),
    (
        "--param body=hello-from-kernel-space",
        &[
            "\"kernel_mode\":\"operator-modules\"",
            "\"khttpd\":\"OE\"",
            "hello-from-kernel-space",
        ],
    ),
    (
        "--replica cp-$i",
        &[
            "\"health\":\"true\"",
            "\"name\":\"acme\"",
            "modvisor_leader 1",
            "modvisor_leader 0",
        ],
    ),
    (
        "modvisor token revoke $JTI",
        &["tenant-a", "revoked", "refused"],
    ),
];

/// How the README says a block is run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    /// As a whole, in the session.
    Block,
    /// Not here; the reason.
    Not(String),
    /// Each line on its own, stopped after this many seconds.
    EachLineFor(u64),
}

/// One `sh` block of the README.
#[derive(Debug)]
struct Block {
    /// Its first line's number in the file (1-based).
    line: usize,
    text: String,
    run: Run,
}

/// The `sh` blocks of `readme`, with how each is run.
fn sh_blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let lines: Vec<&str> = readme.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```sh" {
            i += 1;
            continue;
        }
        let before = if i > 0 { lines[i - 1].trim() } else { "" };
        let run = match before.strip_prefix("<!-- readme test:") {
            None => Run::Block,
            Some(rest) => {
                let rest = rest.trim_end_matches("-->").trim();
                if let Some(why) = rest.strip_prefix("not run") {
                    Run::Not(why.trim().to_string())
                } else if let Some(n) = rest
                    .strip_prefix("each line runs for ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                {
                    Run::EachLineFor(n)
                } else {
                    panic!("README.md:{i}: an annotation this test does not know: {before}");
                }
            }
        };
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .unwrap_or_else(|| panic!("README.md:{}: a block that never ends", start));
        out.push(Block {
            line: start + 1,
            text: lines[start..end].join("\n"),
            run,
        });
        i = end + 1;
    }
    out
}

/// The script that runs `block` in the session.
fn script(block: &Block) -> String {
    match block.run {
        Run::Block => format!("{}\n", block.text),
        Run::EachLineFor(secs) => block
            .text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            // A trailing comment of the line ends at its newline.
            .map(|l| format!("if timeout -k 5 {secs} {l}\nthen :; else [ $? -eq 124 ]; fi\n"))
            .collect(),
        Run::Not(_) => String::new(),
    }
}

/// A bash that runs blocks one after another, keeping its variables between them.
struct Session {
    bash: Child,
    stdin: ChildStdin,
    dir: PathBuf,
}

impl Session {
    fn start(dir: &Path) -> Session {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_modvisor"));
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env("PATH", path)
            .env("MODVISOR_CONFIG", dir.join("no-config.toml"))
            .env("MODVISOR_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for var in [
            "MODVISOR_API",
            "MODVISOR_TOKEN",
            "MODVISOR_TOKEN_FILE",
            "MODVISOR_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        let mut bash = cmd.spawn().expect("bash");
        let mut stdin = bash.stdin.take().unwrap();
        writeln!(stdin, "set -euo pipefail").unwrap();
        Session {
            bash,
            stdin,
            dir: dir.to_path_buf(),
        }
    }

    /// Runs `script` (block `k`, at README line `line`); what it printed (stdout and
    /// stderr). Fails the test when a command of it fails or it takes too long.
    fn run(&mut self, k: usize, line: usize, script: &str) -> String {
        let file = self.dir.join(format!("block-{k}.sh"));
        let out = self.dir.join(format!("block-{k}.out"));
        let done = self.dir.join(format!("block-{k}.done"));
        std::fs::write(&file, script).unwrap();
        writeln!(
            self.stdin,
            "source {} < /dev/null > {} 2>&1; echo > {}",
            file.display(),
            out.display(),
            done.display()
        )
        .unwrap();
        let printed = || std::fs::read_to_string(&out).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(BLOCK_SECS);
        while !done.exists() {
            if let Some(status) = self.bash.try_wait().unwrap() {
                panic!(
                    "README.md:{line}: the block failed (bash {status}):\n{script}\n--- it printed ---\n{}",
                    printed()
                );
            }
            assert!(
                Instant::now() < deadline,
                "README.md:{line}: the block did not end in {BLOCK_SECS} s:\n{script}\n--- it printed ---\n{}",
                printed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        printed()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.bash.kill());
        drop(self.bash.wait());
    }
}

#[test]
fn the_readme_examples_run_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = sh_blocks(&readme);
    let parent = format!("/modvisor-e2e-readme-{}", std::process::id());
    let p = Plane::start_with(&[
        "--nodes",
        "2",
        "--listen",
        README_LISTEN,
        "--jail-cgroup-parent",
        &parent,
        "--jail-uid-base",
        "3100000",
    ]);
    let _cleanup = HostCleanup {
        dir: p.dir.path().to_path_buf(),
        cgroup_parent: parent,
    };
    // The README's relative paths (.modvisor/tokens/...) from the session's directory.
    let dir = p.dir.path().join("readme");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(p.data_dir(), dir.join(".modvisor")).unwrap();
    // And the sources the README builds (modules/sample/khttpd), as from a checkout.
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/modules"),
        dir.join("modules"),
    )
    .unwrap();
    let admin = p.token("admin");
    crate::support::wait_until("both nodes Ready", 120, || {
        let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
        nodes
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["state"] == "Ready"))
    });

    let mut session = Session::start(&dir);
    let mut matched = vec![false; EXPECTED.len()];
    let release = guest_release();
    for (k, block) in blocks.iter().enumerate() {
        if let Run::Not(why) = &block.run {
            assert!(
                !why.is_empty(),
                "README.md:{}: say why it is not run",
                block.line
            );
            continue;
        }
        let printed = session.run(k, block.line, &script(block));
        // Shown with --nocapture.
        println!("--- README.md:{} printed:\n{printed}", block.line);
        assert!(
            !printed.contains("problem:internal"),
            "README.md:{}: an internal error:\n{printed}",
            block.line
        );
        for (i, (fragment, wanted)) in EXPECTED.iter().enumerate() {
            if !block.text.contains(fragment) {
                continue;
            }
            matched[i] = true;
            for w in *wanted {
                assert!(
                    printed.contains(w),
                    "README.md:{}: expected {w:?} in what the block printed:\n{}\n--- it printed ---\n{printed}",
                    block.line,
                    block.text
                );
            }
        }
        if block.text.contains("uname -r") {
            assert!(printed.contains(&release), "{printed}");
        }
    }
    // The README revoked the token it made, and only that one.
    p.get(&p.token("tenant-a"), "/v1/vms").expect(200);
    for (i, m) in matched.iter().enumerate() {
        assert!(
            m,
            "no README block has the line {:?} any more: update EXPECTED",
            EXPECTED[i].0
        );
    }
}

#[test]
fn blocks_and_their_annotations_are_read() {
    let text = "a\n```sh\necho 1\n```\n<!-- readme test: not run (why) -->\n```sh\nx\n```\n\
                <!-- readme test: each line runs for 7 s, then is stopped -->\n```sh\n\
                tail -f f   # forever\n\n# a comment\n```\n```toml\nno = 1\n```\n";
    let b = sh_blocks(text);
    assert_eq!(b.len(), 3);
    assert_eq!(
        (b[0].line, b[0].text.as_str(), &b[0].run),
        (3, "echo 1", &Run::Block)
    );
    assert_eq!(b[1].run, Run::Not("(why)".into()));
    assert_eq!(b[2].run, Run::EachLineFor(7));
    assert_eq!(
        script(&b[2]),
        "if timeout -k 5 7 tail -f f   # forever\nthen :; else [ $? -eq 124 ]; fi\n"
    );
}
