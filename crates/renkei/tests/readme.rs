//! The README runs as written. Its `sh` blocks under "A session with curl", "Patient matching
//! (EMPI)" and "FHIRPath" are read from README.md and executed in order, as one shell session,
//! against the real binary on a fresh store (SQLite and PostgreSQL), from the repository root:
//!
//! - `curl` commands are translated into HTTP requests (method, `-H` headers, `-d` bodies with
//!   `@file` read from the repository root, as curl does, without its newlines) sent to a
//!   `renkei serve` started by the test; the README's `http://127.0.0.1:8080` is that server.
//!   Each must answer 2xx, or the status its comment starts with (`# 204: ...`, or a comment
//!   line right below it); a search or history Bundle must hold something.
//! - `cargo run --release -p renkei -- ARGS` runs the binary with ARGS (`--data ./renkei-data`
//!   becomes the test's store) after stopping the server, as the README asks, and must exit 0.
//! - Shell variables (`B=...`, `P='...'`), `$VAR` expansion with word splitting, quoting,
//!   line continuations, comments and `$(curl ... | jq -r '.path[0].to')` are interpreted;
//!   any other shell construct or command fails the test, so that the README cannot drift into
//!   something a reader cannot run.
//!
//! Blocks that read the Synthea samples beside the repository (`../shared`) are not run: they
//! take minutes. What they need is checked instead: the files the README names under
//! `examples/` exist, and the benchmarks defaulting to `../shared` say what is missing when run
//! elsewhere.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use support::{Backend, Data, Server, renkei};

/// Where the README's server listens (`serve --listen 127.0.0.1:8080`).
const README_ORIGIN: &str = "http://127.0.0.1:8080";
/// The README sections whose `sh` blocks are run, in this order.
const SECTIONS: &[&str] = &["A session with curl", "Patient matching (EMPI)", "FHIRPath"];
/// How the README runs the binary.
const CARGO_RUN: &[&str] = &["cargo", "run", "--release", "-p", "renkei", "--"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

/// The ```sh blocks of the `## heading` section: (line number of the block's first line, text).
fn sh_blocks(readme: &str, heading: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut section = "";
    let mut open: Option<(usize, String)> = None;
    for (n, line) in readme.lines().enumerate() {
        if let Some((_, text)) = &mut open {
            if line.trim_end() == "```" {
                blocks.push(open.take().unwrap());
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if let Some(h) = line.strip_prefix("## ") {
            section = h.trim();
        } else if line.trim_end() == "```sh" && section == heading {
            open = Some((n + 2, String::new()));
        }
    }
    assert!(open.is_none(), "an unclosed ```sh block under {heading}");
    blocks
}

// ---------------------------------------------------------------------------------------------
// A small shell lexer: the subset of sh the README uses, and an error for anything else.

#[derive(Debug, Clone)]
enum Part {
    /// Text as written (quotes and escapes already removed).
    Lit(String),
    /// `$NAME` / `${NAME}`; unquoted ones are split into words.
    Var { name: String, quoted: bool },
    /// `$(...)`: its text, run as a pipeline.
    Subst { text: String, quoted: bool },
}

type Word = Vec<Part>;

#[derive(Debug)]
struct Command {
    line: usize,
    /// Pipeline stages, each a list of words; `[[]]` for a comment-only line.
    stages: Vec<Vec<Word>>,
    comment: Option<String>,
}

impl Command {
    fn is_empty(&self) -> bool {
        self.stages.iter().all(Vec::is_empty)
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    commands: Vec<Command>,
    current: Command,
    word: Option<Word>,
}

impl Lexer {
    fn new(text: &str, line: usize) -> Lexer {
        Lexer {
            chars: text.chars().collect(),
            i: 0,
            line,
            commands: Vec::new(),
            current: Command {
                line,
                stages: vec![Vec::new()],
                comment: None,
            },
            word: None,
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "README line {}: {what} (the README test runs simple commands only)",
            self.line
        )
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn push_part(&mut self, part: Part) {
        let word = self.word.get_or_insert_with(Vec::new);
        match (word.last_mut(), part) {
            (Some(Part::Lit(last)), Part::Lit(more)) => last.push_str(&more),
            (_, part) => word.push(part),
        }
    }

    fn push_char(&mut self, c: char) {
        self.push_part(Part::Lit(c.to_string()));
    }

    fn end_word(&mut self) {
        if let Some(word) = self.word.take() {
            self.current.stages.last_mut().unwrap().push(word);
        }
    }

    fn end_command(&mut self) {
        self.end_word();
        let next = Command {
            line: self.line,
            stages: vec![Vec::new()],
            comment: None,
        };
        let done = std::mem::replace(&mut self.current, next);
        if done.stages.len() > 1 && done.stages.iter().any(Vec::is_empty) {
            self.fail("an empty pipeline stage");
        }
        if !done.is_empty() || done.comment.is_some() {
            self.commands.push(done);
        }
    }

    fn lex(mut self, pipes: bool) -> Vec<Command> {
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => match self.peek(1) {
                    Some('\n') => {
                        self.i += 2;
                        self.line += 1;
                    }
                    Some(next) => {
                        self.push_char(next);
                        self.i += 2;
                    }
                    None => self.fail("a trailing backslash"),
                },
                ' ' | '\t' => {
                    self.end_word();
                    self.i += 1;
                }
                '\n' => {
                    self.i += 1;
                    self.end_command();
                    self.line += 1;
                    self.current.line = self.line;
                }
                '#' if self.word.is_none() => {
                    let start = self.i + 1;
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                    let text: String = self.chars[start..self.i].iter().collect();
                    self.current.comment = Some(text.trim().to_owned());
                }
                '\'' => {
                    self.i += 1;
                    let mut text = String::new();
                    loop {
                        match self.peek(0) {
                            Some('\'') => break,
                            Some(c) => {
                                if c == '\n' {
                                    self.line += 1;
                                }
                                text.push(c);
                                self.i += 1;
                            }
                            None => self.fail("an unclosed single quote"),
                        }
                    }
                    self.i += 1;
                    // '' is an empty word, not no word.
                    self.push_part(Part::Lit(text));
                }
                '"' => self.double_quoted(),
                '$' => self.dollar(false),
                '|' if pipes => {
                    self.end_word();
                    self.current.stages.push(Vec::new());
                    self.i += 1;
                }
                ';' | '&' | '|' | '>' | '<' | '`' | '(' | ')' | '*' | '?' | '[' | '{' => {
                    self.fail(&format!("unquoted `{c}`"))
                }
                c => {
                    self.push_char(c);
                    self.i += 1;
                }
            }
        }
        self.end_command();
        self.commands
    }

    fn double_quoted(&mut self) {
        self.i += 1;
        self.push_part(Part::Lit(String::new()));
        loop {
            match self.peek(0) {
                Some('"') => {
                    self.i += 1;
                    return;
                }
                Some('\\') => {
                    match self.peek(1) {
                        Some(c @ ('$' | '"' | '\\' | '`')) => self.push_char(c),
                        Some('\n') => self.line += 1,
                        Some(c) => {
                            self.push_char('\\');
                            self.push_char(c);
                        }
                        None => self.fail("an unclosed double quote"),
                    }
                    self.i += 2;
                }
                Some('$') => self.dollar(true),
                Some('`') => self.fail("a backquote"),
                Some(c) => {
                    if c == '\n' {
                        self.line += 1;
                    }
                    self.push_char(c);
                    self.i += 1;
                }
                None => self.fail("an unclosed double quote"),
            }
        }
    }

    /// At a `$`: a variable, a command substitution, or a plain dollar sign.
    fn dollar(&mut self, quoted: bool) {
        match self.peek(1) {
            Some('(') => {
                self.i += 2;
                let start = self.i;
                let (mut depth, mut quote) = (1, None);
                while depth > 0 {
                    let Some(c) = self.peek(0) else {
                        self.fail("an unclosed $(")
                    };
                    match (quote, c) {
                        (Some(q), c) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, '\'' | '"') => quote = Some(c),
                        (None, '(') => depth += 1,
                        (None, ')') => depth -= 1,
                        _ => {}
                    }
                    self.i += 1;
                }
                let text: String = self.chars[start..self.i - 1].iter().collect();
                self.push_part(Part::Subst { text, quoted });
            }
            Some('{') => {
                let start = self.i + 2;
                let Some(len) = self.chars[start..].iter().position(|&c| c == '}') else {
                    self.fail("an unclosed ${")
                };
                let name: String = self.chars[start..start + len].iter().collect();
                self.i = start + len + 1;
                self.push_part(Part::Var { name, quoted });
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.i + 1;
                let len = self.chars[start..]
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(self.chars.len() - start);
                let name: String = self.chars[start..start + len].iter().collect();
                self.i = start + len;
                self.push_part(Part::Var { name, quoted });
            }
            _ => {
                self.push_char('$');
                self.i += 1;
            }
        }
    }
}

fn lex(text: &str, line: usize, pipes: bool) -> Vec<Command> {
    Lexer::new(text, line).lex(pipes)
}

/// The status a comment announces: `# 204: ...`, `#   201 Created, ...`.
fn announced_status(comment: &str) -> Option<u16> {
    let digits: String = comment.chars().take_while(char::is_ascii_digit).collect();
    let rest = &comment[digits.len()..];
    (digits.len() == 3 && !rest.starts_with(|c: char| c.is_alphanumeric()))
        .then(|| digits.parse().unwrap())
}

/// `jq [-r] FILTER` for filters made of `.name` and `[n]` steps.
fn jq(args: &[String], input: &str, line: usize) -> String {
    let (raw, filter) = match args {
        [r, f] if r == "-r" => (true, f),
        [f] => (false, f),
        _ => panic!("README line {line}: jq {args:?}: the test knows `jq [-r] '.path[0]'`"),
    };
    let mut v: Value = serde_json::from_str(input)
        .unwrap_or_else(|e| panic!("README line {line}: jq input is not JSON ({e}): {input}"));
    let mut rest = filter.as_str();
    assert!(
        rest.starts_with('.'),
        "README line {line}: jq filter {filter}"
    );
    if rest == "." {
        rest = "";
    }
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').expect("a closing ]");
            let n: usize = after[..end].parse().expect("an index");
            v = v[n].take();
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            v = v[&after[..end]].take();
            rest = &after[end..];
        } else {
            panic!("README line {line}: jq filter {filter}: unexpected {rest}");
        }
    }
    match (&v, raw) {
        (Value::String(s), true) => format!("{s}\n"),
        _ => format!("{v}\n"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running the commands.

struct Session<'a> {
    data: &'a Data,
    server: Option<Server>,
    env: HashMap<String, String>,
    client: reqwest::Client,
    /// Requests sent and binary runs, as `README line N: ...` (printed; a failing test shows
    /// them).
    ran: Vec<String>,
}

impl Session<'_> {
    async fn run_block(&mut self, first_line: usize, text: &str) {
        let commands = lex(text, first_line, true);
        for (k, command) in commands.iter().enumerate() {
            if command.is_empty() {
                continue;
            }
            // The comment on the command's line, or a comment-only line right below it.
            let comment = command.comment.as_deref().or_else(|| {
                commands
                    .get(k + 1)
                    .filter(|next| next.is_empty())
                    .and_then(|next| next.comment.as_deref())
            });
            let expected = comment.and_then(announced_status);
            self.run(command, expected).await;
        }
    }

    async fn run(&mut self, command: &Command, expected: Option<u16>) {
        let line = command.line;
        if let [stage] = command.stages.as_slice()
            && let [word] = stage.as_slice()
            && let Some(Part::Lit(first)) = word.first()
            && let Some((name, value)) = first.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            // NAME=value: expanded without word splitting.
            let mut parts = word.clone();
            parts[0] = Part::Lit(value.to_owned());
            let value = self.expand(&parts, line, false).await.join(" ");
            self.env.insert(name.to_owned(), value);
            return;
        }
        self.pipeline(&command.stages, expected, line).await;
    }

    async fn pipeline(
        &mut self,
        stages: &[Vec<Word>],
        expected: Option<u16>,
        line: usize,
    ) -> String {
        let mut argv = Vec::new();
        for word in &stages[0] {
            argv.extend(self.expand(word, line, true).await);
        }
        let mut out = match argv.first().map(String::as_str) {
            Some("curl") => self.curl(&argv[1..], expected, line).await,
            Some("cargo") => {
                assert!(
                    argv.len() > CARGO_RUN.len() && argv[..CARGO_RUN.len()] == *CARGO_RUN,
                    "README line {line}: {argv:?}: the test knows `{}` only",
                    CARGO_RUN.join(" ")
                );
                self.renkei(&argv[CARGO_RUN.len()..], line).await
            }
            _ => panic!("README line {line}: {argv:?}: a command the README test does not know"),
        };
        for stage in &stages[1..] {
            let mut argv = Vec::new();
            for word in stage {
                argv.extend(self.expand(word, line, true).await);
            }
            match argv.first().map(String::as_str) {
                Some("jq") => out = jq(&argv[1..], &out, line),
                _ => panic!("README line {line}: {argv:?}: a filter the README test does not know"),
            }
        }
        out
    }

    /// A word's fields: unquoted expansions are split on white space (when `split`).
    async fn expand(&mut self, word: &Word, line: usize, split: bool) -> Vec<String> {
        let mut fields: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for part in word {
            let (value, quoted) = match part {
                Part::Lit(s) => (s.clone(), true),
                Part::Var { name, quoted } => {
                    let value = self.env.get(name).cloned().unwrap_or_else(|| {
                        panic!("README line {line}: ${name} is not set at this point")
                    });
                    (value, *quoted)
                }
                Part::Subst { text, quoted } => {
                    let commands = lex(text, line, true);
                    let [command] = commands.as_slice() else {
                        panic!("README line {line}: $({text}) is not one command")
                    };
                    let out = Box::pin(self.pipeline(&command.stages, None, line)).await;
                    (out.trim_end_matches('\n').to_owned(), *quoted)
                }
            };
            if quoted || !split {
                current.get_or_insert_with(String::new).push_str(&value);
                continue;
            }
            if value.starts_with(char::is_whitespace) {
                fields.extend(current.take());
            }
            let mut pieces = value.split_whitespace().peekable();
            while let Some(piece) = pieces.next() {
                current.get_or_insert_with(String::new).push_str(piece);
                if pieces.peek().is_some() {
                    fields.extend(current.take());
                }
            }
            if value.ends_with(char::is_whitespace) {
                fields.extend(current.take());
            }
        }
        fields.extend(current);
        fields
    }

    fn log(&mut self, line: usize, what: String) {
        let entry = format!("README line {line}: {what}");
        println!("{entry}");
        self.ran.push(entry);
    }

    async fn server(&mut self) -> &Server {
        if self.server.is_none() {
            self.server = Some(Server::start(self.data).await);
        }
        self.server.as_ref().unwrap()
    }

    /// `curl` as the README writes it, translated into one request.
    async fn curl(&mut self, args: &[String], expected: Option<u16>, line: usize) -> String {
        let (mut method, mut headers, mut body, mut url) = (None, Vec::new(), None, None);
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .unwrap_or_else(|| panic!("README line {line}: curl {arg} needs a value"))
                    .clone()
            };
            match arg.as_str() {
                "-X" | "--request" => method = Some(value()),
                "-H" | "--header" => {
                    let h = value();
                    let (k, v) = h
                        .split_once(':')
                        .unwrap_or_else(|| panic!("README line {line}: header {h}"));
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
                "-d" | "--data" => {
                    let d = value();
                    body = Some(match d.strip_prefix('@') {
                        // As curl -d @file does: the file's content without CR and LF.
                        Some(file) => std::fs::read_to_string(repo_root().join(file))
                            .unwrap_or_else(|e| panic!("README line {line}: {file}: {e}"))
                            .replace(['\r', '\n'], ""),
                        None => d,
                    });
                }
                flags
                    if flags.len() > 1
                        && flags.starts_with('-')
                        && flags[1..].chars().all(|c| "siS".contains(c)) => {}
                other if other.starts_with('-') => {
                    panic!("README line {line}: curl option {other} the test does not know")
                }
                other => {
                    assert!(url.is_none(), "README line {line}: curl with two URLs");
                    url = Some(other.to_owned());
                }
            }
        }
        let url = url.unwrap_or_else(|| panic!("README line {line}: curl without a URL"));
        assert!(
            !url.contains(['[', ']', '{', '}']),
            "README line {line}: curl would read {url} as a glob pattern"
        );
        let path = url.strip_prefix(README_ORIGIN).unwrap_or_else(|| {
            panic!("README line {line}: {url} is not the README's server ({README_ORIGIN})")
        });
        let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push((
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
        }
        let origin = self
            .server()
            .await
            .base
            .trim_end_matches("/fhir")
            .to_owned();
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{origin}{path}"));
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        if let Some(b) = body {
            request = request.body(b);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        self.log(line, format!("{method} {path} -> {status}"));
        let text = response.text().await.unwrap();
        match expected {
            Some(e) => assert_eq!(
                status, e,
                "README line {line}: {method} {url} answered {status}, the README says {e}: {text}"
            ),
            None => assert!(
                (200..300).contains(&status),
                "README line {line}: {method} {url} answered {status}: {text}"
            ),
        }
        if let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["resourceType"] == "Bundle"
            && (v["type"] == "searchset" || v["type"] == "history")
        {
            let found = v["entry"].as_array().is_some_and(|e| !e.is_empty())
                || v["total"].as_u64().is_some_and(|t| t > 0);
            assert!(
                found,
                "README line {line}: {method} {url} finds nothing on the README's data: {v}"
            );
        }
        text
    }

    /// `cargo run --release -p renkei -- ARGS`, from the repository root, on the test's store,
    /// with the server stopped.
    async fn renkei(&mut self, args: &[String], line: usize) -> String {
        assert_ne!(
            args.first().map(String::as_str),
            Some("serve"),
            "README line {line}: the test starts the server itself"
        );
        if let Some(server) = self.server.take() {
            server.terminate();
        }
        let mut argv = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--data"
                && args.as_slice().first().map(String::as_str) == Some("./renkei-data")
            {
                args.next();
                argv.extend(self.data.args());
            } else {
                argv.push(arg.clone());
            }
        }
        let out = renkei()
            .args(&argv)
            .current_dir(repo_root())
            .output()
            .expect("run renkei");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        self.log(line, format!("renkei {} -> {}", argv.join(" "), out.status));
        assert!(
            out.status.success(),
            "README line {line}: renkei {argv:?} failed ({}): {stderr}{stdout}",
            out.status
        );
        stdout
    }
}

async fn readme_session(backend: Backend) {
    let readme = readme();
    assert!(
        readme.contains(&format!(
            "serve --data ./renkei-data --listen {}",
            README_ORIGIN.trim_start_matches("http://")
        )),
        "the README's server is no longer at {README_ORIGIN}"
    );
    let data = Data::new(backend).await;
    server::tls::install_default_provider();
    let mut session = Session {
        data: &data,
        server: None,
        env: HashMap::new(),
        client: reqwest::Client::new(),
        ran: Vec::new(),
    };
    for section in SECTIONS {
        let blocks = sh_blocks(&readme, section);
        assert!(!blocks.is_empty(), "no sh block under ## {section}");
        for (line, text) in blocks {
            if !text.contains("../shared") {
                session.run_block(line, &text).await;
            }
        }
    }
    if let Some(server) = session.server.take() {
        assert!(server.terminate().success());
    }
    // The blocks were found and run: the session's requests and the shell's commands.
    let requests = session
        .ran
        .iter()
        .filter(|r| !r.contains("renkei "))
        .count();
    let runs = session.ran.len() - requests;
    assert!(requests >= 25 && runs >= 4, "{:#?}", session.ran);
}

#[tokio::test]
async fn sqlite_readme_session() {
    readme_session(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_readme_session() {
    readme_session(Backend::Postgres).await;
}

/// Every `examples/...` path the README names is in the repository.
#[test]
fn readme_examples_exist() {
    let readme = readme();
    let mut named = 0;
    for (at, _) in readme.match_indices("examples/") {
        let path: String = readme[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "._-/".contains(*c))
            .collect();
        let path = path.trim_end_matches('.');
        assert!(repo_root().join(path).exists(), "README names {path}");
        named += 1;
    }
    assert!(named >= 4, "the README names its example files");
}

/// The benchmarks whose default dataset is `../shared/...` say, outside the repository root,
/// what is missing and how to name a dataset, instead of a bare I/O error.
#[test]
fn bench_default_dataset_outside_the_repository() {
    let dir = std::env::temp_dir().join(format!("renkei-readme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = renkei().args(args).current_dir(&dir).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["bench", "generate", "--output", "generated"]);
    assert!(!ok);
    for needle in [
        "../shared/data/synthea-10",
        "beside the repository",
        "repository root",
        "--source DIR",
        &dir.display().to_string(),
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    assert!(!dir.join("generated").exists(), "nothing written: {err}");
    let (ok, err) = run(&["bench", "ingest"]);
    assert!(!ok);
    assert!(
        err.contains("../shared/data/synthea-10") && err.contains("renkei bench ingest PATH"),
        "{err}"
    );
    // A dataset given explicitly that is not there is named as such.
    let (ok, err) = run(&["bench", "ingest", "nowhere"]);
    assert!(!ok);
    assert!(err.contains("dataset nowhere does not exist"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lexer: what the README relies on, and refusals of what the test cannot run.
#[test]
fn shell_subset() {
    let commands = lex(
        "A='x y'\ncurl -s \"$B/\\$op\" -d 'a\nb' \\\n  -H \"$J\"   # 204: done\n# note\nG=$(curl -s \"$B\" | jq -r '.a[0]')\n",
        1,
        true,
    );
    assert_eq!(commands.len(), 4, "{commands:?}");
    assert_eq!(commands[1].line, 2);
    assert_eq!(commands[1].stages[0].len(), 7, "{commands:?}");
    assert_eq!(commands[1].comment.as_deref(), Some("204: done"));
    assert!(commands[2].is_empty());
    assert!(
        matches!(&commands[3].stages[0][0][1], Part::Subst { text, .. } if text.contains("| jq"))
    );
    assert_eq!(announced_status("204: done"), Some(204));
    assert_eq!(announced_status("201 Created, Location"), Some(201));
    assert_eq!(announced_status("2024 figures"), None);
    assert_eq!(announced_status("searchset bundle"), None);
    assert_eq!(
        jq(
            &["-r".into(), ".entry[0].resource.id".into()],
            r#"{"entry":[{"resource":{"id":"E1"}}]}"#,
            1
        ),
        "E1\n"
    );
    for bad in ["a; b", "a && b", "a > f", "echo `x`", "curl $B/x[1]"] {
        let refused = std::panic::catch_unwind(|| lex(bad, 1, false)).is_err();
        assert!(refused, "{bad} is refused");
    }
}
