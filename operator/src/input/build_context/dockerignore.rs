//! `.dockerignore`, read and matched by Docker's own rules, not gitignore's.
//!
//! The rules are those of moby's `patternmatcher` (and its `ignorefile` reader), which the docker
//! CLI applies when it tars a context for the classic builder; this is a port of the rules, not
//! of the code:
//!
//! - reading: a UTF-8 BOM is dropped; a line that *starts* with `#` is a comment (`  # x` is a
//!   pattern); blank lines are skipped; each line is trimmed, cleaned like Go's `filepath.Clean`
//!   (`./a//b/../c` is `a/c`) and loses a leading `/`; `!` makes an exception, `! a` is `!a`;
//! - a pattern matches the whole slash-separated path relative to the context: `*` is any run
//!   of characters but `/`, `?` one character but `/`, `[a-z]` and `[^a-z]` are classes, `\x`
//!   is `x`, and `**` is any number of folders (`**/x` also matches `x`; a leading `**x` is
//!   "ends with x"; a trailing `x/**` is "starts with x/");
//! - a path is excluded when it or one of its parent folders matches, and the last pattern that
//!   matches decides (an exception re-includes);
//! - an excluded folder is not walked into unless an exception's text starts with the folder's
//!   path and a slash (`!dir/keep`, not `!**/keep`); the folder itself is then not sent, only
//!   what the patterns re-include inside it.
//!
//! Where this port differs from Docker, on purpose: a pattern Docker accepts when reading but
//! cannot evaluate (a class range out of order, `[z-a]`) is refused here when read, where Docker
//! fails at the first path that reaches it and the CLI then sends a truncated context; `\x` is
//! the literal `x` for every `x` (Docker's regular expression reads `\d`, `\w`, ... as classes);
//! `*` and `?` inside `[...]` are members of the class, and `^` outside a class is a literal
//! (Docker's regular expression mangles both).

use std::fs;
use std::path::Path;

use super::ContextError;

/// The compiled patterns of a `.dockerignore`.
#[derive(Clone, Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// A `.dockerignore` line that is not a valid pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {pattern:?}: {reason}")]
pub struct IgnoreError {
    /// 1-based line of the file (or index in the list given to [`DockerIgnore::from_patterns`]).
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

impl DockerIgnore {
    /// The patterns of `<context>/.dockerignore`; none when there is no such file.
    pub fn read(context: &Path) -> Result<Self, ContextError> {
        let path = context.join(super::DOCKERIGNORE);
        match fs::read(&path) {
            Ok(bytes) => {
                Self::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| ContextError::Ignore { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ContextError::Read { path, source }),
        }
    }

    /// The patterns of a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        Self::compile(read_lines(text))
    }

    /// Patterns as a list, as the engine API's `excludes` take them (no comments, no BOM).
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Self, IgnoreError> {
        Self::compile(patterns.iter().enumerate().map(|(i, p)| (i + 1, p.as_ref().to_owned())))
    }

    fn compile(lines: impl IntoIterator<Item = (usize, String)>) -> Result<Self, IgnoreError> {
        let mut patterns = Vec::new();
        for (line, text) in lines {
            let error = |reason: String| IgnoreError { line, pattern: text.clone(), reason };
            if let Some(p) = Pattern::new(&text).map_err(error)? {
                patterns.push(p);
            }
        }
        Ok(Self { patterns })
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!...`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether Docker leaves `path` (relative, slash-separated) out of the context: it or one
    /// of its parent folders matches, and the last matching pattern is not an exception.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.matches_under(path, None).0
    }

    /// Like [`Self::is_excluded`] but without looking at parent folders (moby's `MatchesExact`).
    #[cfg(test)]
    fn matches_exact(&self, path: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            if p.exception == excluded && p.matches(path) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether `path` is excluded, given which patterns matched its parent folder (`None` for a
    /// path at the top, or when unknown: then the parents are matched here), and which patterns
    /// matched `path` itself, for its children (moby's `MatchesUsingParentResults`).
    pub(super) fn matches_under(&self, path: &str, parent: Option<&[bool]>) -> (bool, Vec<bool>) {
        let mut excluded = false;
        let mut matched = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            // A pattern that matched the parent matches its contents, whatever the state.
            let mut m = parent.is_some_and(|parent| parent[i]);
            if !m {
                // Only a pattern that could change the verdict is evaluated.
                if p.exception != excluded {
                    continue;
                }
                m = p.matches(path) || (parent.is_none() && parent_folders(path).iter().any(|d| p.matches(d)));
            }
            matched[i] = m;
            if m {
                excluded = !p.exception;
            }
        }
        (excluded, matched)
    }

    /// Whether an exception may re-include something inside the excluded folder `dir`, so that
    /// Docker walks into it: an exception whose text starts with `dir/`.
    pub(super) fn may_reinclude_under(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns.iter().any(|p| p.exception && format!("{}/", p.text).starts_with(&prefix))
    }

    /// These patterns with an exception added for each of `paths` they exclude, as the docker
    /// CLI does for the Dockerfile and `.dockerignore`, which it always sends.
    pub(super) fn keeping(&self, paths: &[&str]) -> Self {
        let mut kept = self.clone();
        for path in paths {
            if kept.is_excluded(path) {
                // A name that is no valid pattern is kept by the caller's own check.
                if let Ok(Some(p)) = Pattern::new(&format!("!{path}")) {
                    kept.patterns.push(p);
                }
            }
        }
        kept
    }
}

/// The lines of a `.dockerignore` that are patterns, each with its 1-based line number, read as
/// moby's `ignorefile.ReadAll` reads them.
fn read_lines(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // A comment only when `#` is the very first character.
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (exception, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = if rest.is_empty() { String::new() } else { clean(rest) };
        if pattern.len() > 1 && pattern.starts_with('/') {
            pattern.remove(0);
        }
        out.push((i + 1, if exception { format!("!{pattern}") } else { pattern }));
    }
    out
}

/// Go's `filepath.Clean` on a slash-separated path: no empty or `.` elements, `..` resolved
/// where it can be, `.` for nothing.
pub(super) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The parent folders of `path`, shortest first (`a/b/c` has `a` and `a/b`), as moby derives
/// them: from the cleaned `filepath.Dir`.
fn parent_folders(path: &str) -> Vec<String> {
    let Some(slash) = path.rfind('/') else { return Vec::new() };
    let parent = clean(&path[..=slash]);
    if parent == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = parent.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// One compiled pattern.
#[derive(Clone, Debug)]
struct Pattern {
    /// Cleaned, without its `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

/// How a pattern matches, as moby classifies it (the classes match differently at the edges:
/// `**file` is "ends with file", so it matches `myfile`).
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// No wildcard: the path is the text.
    Exact,
    /// Literal text and a trailing `**`: the path starts with the text before the `**`.
    Prefix(String),
    /// A leading `**` and literal text: the path ends with the text after the `**` (or is it,
    /// without its leading slash).
    Suffix(String),
    /// Anything else: the tokens match the whole path.
    Glob(Vec<Token>),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Char(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters but `/`.
    Run,
    /// `**` with more pattern after it: nothing, or anything up to a `/` (no newline).
    Folders,
    /// `**` at the end, after a wildcard: anything (no newline).
    Rest,
    /// `[...]`: a character in (or, negated, not in) the ranges; `/` included.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    /// `None` for a blank pattern; an error for `!` alone or bad syntax.
    fn new(raw: &str) -> Result<Option<Self>, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let text = clean(text);
        let (exception, text) = match text.strip_prefix('!') {
            Some("") => return Err("illegal exclusion pattern: \"!\"".to_owned()),
            Some(rest) => (true, rest.to_owned()),
            None => (false, text),
        };
        let kind = compile(&text).map_err(|e| format!("syntax error in pattern: {e}"))?;
        Ok(Some(Self { text, exception, kind }))
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob(tokens) => glob_matches(tokens, &path.chars().collect::<Vec<_>>()),
        }
    }
}

/// The pattern's kind, decided the way moby's `compile` decides it: the last wildcard seen sets
/// it, a `**` first makes a suffix match, a `**` last after only literals a prefix match.
fn compile(text: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Seen {
        Exact,
        Prefix,
        Suffix,
        Glob,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut seen = Seen::Exact;
    let mut tokens = Vec::new();
    let (mut i, mut step) = (0, 0);
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i < chars.len() {
                    tokens.push(Token::Folders);
                    seen = Seen::Glob;
                } else if seen == Seen::Exact {
                    seen = Seen::Prefix;
                } else {
                    tokens.push(Token::Rest);
                    seen = Seen::Glob;
                }
                if step == 0 {
                    seen = Seen::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Run);
                seen = Seen::Glob;
            }
            '?' => {
                tokens.push(Token::One);
                seen = Seen::Glob;
            }
            '\\' => {
                let Some(&next) = chars.get(i) else { return Err("a trailing \\ escapes nothing".to_owned()) };
                i += 1;
                tokens.push(Token::Char(next));
                seen = Seen::Glob;
            }
            '[' => {
                let (class, next) = class(&chars, i)?;
                i = next;
                tokens.push(class);
                seen = Seen::Glob;
            }
            ']' => {
                tokens.push(Token::Char(']'));
                seen = Seen::Glob;
            }
            c => tokens.push(Token::Char(c)),
        }
        step += 1;
    }
    Ok(match seen {
        Seen::Exact => Kind::Exact,
        Seen::Prefix => Kind::Prefix(text[..text.len() - 2].to_owned()),
        Seen::Suffix => Kind::Suffix(text[2..].to_owned()),
        Seen::Glob => Kind::Glob(tokens),
    })
}

/// The class opened just before `i`, and the index after its `]`; the syntax of Go's
/// `filepath.Match` (at least one range, `-` and `]` only escaped, no open end).
fn class(chars: &[char], mut i: usize) -> Result<(Token, usize), String> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if !ranges.is_empty() && chars.get(i) == Some(&']') {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let (lo, next) = class_char(chars, i)?;
        let (hi, next) = if chars[next] == '-' { class_char(chars, next + 1)? } else { (lo, next) };
        if lo > hi {
            return Err(format!("the range {lo}-{hi} is out of order"));
        }
        ranges.push((lo, hi));
        i = next;
    }
}

/// One character of a class at `i` (`\` escapes), and the index after it, which must not be
/// the end.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), String> {
    let (c, next) = match chars.get(i) {
        None => return Err("unterminated character class".to_owned()),
        Some('-' | ']') => return Err(format!("a bare {:?} in a character class", chars[i])),
        Some('\\') => match chars.get(i + 1) {
            Some(&c) => (c, i + 2),
            None => return Err("unterminated character class".to_owned()),
        },
        Some(&c) => (c, i + 1),
    };
    if next >= chars.len() {
        return Err("unterminated character class".to_owned());
    }
    Ok((c, next))
}

/// Whether the tokens match all of `path`; dynamic programming over (token, position), so no
/// pattern takes exponential time.
fn glob_matches(tokens: &[Token], path: &[char]) -> bool {
    let mut memo = vec![None; (tokens.len() + 1) * (path.len() + 1)];
    glob_at(tokens, path, 0, 0, &mut memo)
}

fn glob_at(tokens: &[Token], path: &[char], t: usize, s: usize, memo: &mut [Option<bool>]) -> bool {
    let key = t * (path.len() + 1) + s;
    if let Some(known) = memo[key] {
        return known;
    }
    let n = path.len();
    // Where a run of "any character" (Go's `.`, which stops at a newline) must end.
    let line_end = || path[s..].iter().position(|&c| c == '\n').map_or(n, |p| s + p);
    let result = match tokens.get(t) {
        None => s == n,
        Some(Token::Char(c)) => s < n && path[s] == *c && glob_at(tokens, path, t + 1, s + 1, memo),
        Some(Token::One) => s < n && path[s] != '/' && glob_at(tokens, path, t + 1, s + 1, memo),
        Some(Token::Class { negated, ranges }) => {
            s < n
                && ranges.iter().any(|&(lo, hi)| lo <= path[s] && path[s] <= hi) != *negated
                && glob_at(tokens, path, t + 1, s + 1, memo)
        }
        Some(Token::Run) => {
            glob_at(tokens, path, t + 1, s, memo) || (s < n && path[s] != '/' && glob_at(tokens, path, t, s + 1, memo))
        }
        Some(Token::Folders) => {
            glob_at(tokens, path, t + 1, s, memo)
                || (s..line_end()).any(|j| path[j] == '/' && glob_at(tokens, path, t + 1, j + 1, memo))
        }
        Some(Token::Rest) => (s..=line_end()).any(|j| glob_at(tokens, path, t + 1, j, memo)),
    };
    memo[key] = Some(result);
    result
}

/// Ported tables: moby/patternmatcher `patternmatcher_test.go` (`TestMatches` with its
/// multi-pattern cases and the Unix-only rows, `TestMatch` — Go's own `filepath.Match` table —,
/// `TestCompile`'s match types, `TestCleanPatterns*`, the single-case tests, the regression test
/// for moby/moby#52203), moby/patternmatcher `ignorefile/ignorefile_test.go` (`TestReadAll`),
/// and docker/cli `cli/command/image/build/context_test.go` (`filepathMatches` cases). The
/// context-level cases of moby's `integration-cli` build tests are in the parent module.
#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Expect {
        Fail,
        Exact,
        /// Matches only through a parent folder.
        Inexact,
    }
    use Expect::*;

    const MATCHES: &[(&str, &str, Expect)] = &[
        ("**", "file", Exact),
        ("**", "file/", Exact),
        ("**/", "file", Exact),
        ("**/", "file/", Exact),
        ("**", "/", Exact),
        ("**/", "/", Exact),
        ("**", "dir/file", Exact),
        ("**/", "dir/file", Exact),
        ("**", "dir/file/", Exact),
        ("**/", "dir/file/", Exact),
        ("**/**", "dir/file", Exact),
        ("**/**", "dir/file/", Exact),
        ("dir/**", "dir/file", Exact),
        ("dir/**", "dir/file/", Exact),
        ("dir/**", "dir/dir2/file", Exact),
        ("dir/**", "dir/dir2/file/", Exact),
        ("**/dir", "dir", Exact),
        ("**/dir", "dir/file", Inexact),
        ("**/dir2/*", "dir/dir2/file", Exact),
        ("**/dir2/*", "dir/dir2/file/", Inexact),
        ("**/dir2/**", "dir/dir2/dir3/file", Exact),
        ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
        ("**file", "file", Exact),
        ("**file", "dir/file", Exact),
        ("**/file", "dir/file", Exact),
        ("**file", "dir/dir/file", Exact),
        ("**/file", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file.txt", Exact),
        ("**/file*txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt*", "dir/dir/file.txt", Exact),
        ("**/**/*.txt", "dir/dir/file.txt", Exact),
        ("**/**/*.txt2", "dir/dir/file.txt", Fail),
        ("**/*.txt", "file.txt", Exact),
        ("**/**/*.txt", "file.txt", Exact),
        ("a**/*.txt", "a/file.txt", Exact),
        ("a**/*.txt", "a/dir/file.txt", Exact),
        ("a**/*.txt", "a/dir/dir/file.txt", Exact),
        ("a/*.txt", "a/dir/file.txt", Fail),
        ("a/*.txt", "a/file.txt", Exact),
        ("a/*.txt**", "a/file.txt", Exact),
        ("a[b-d]e", "ae", Fail),
        ("a[b-d]e", "ace", Exact),
        ("a[b-d]e", "aae", Fail),
        ("a[^b-d]e", "aze", Exact),
        (".*", ".foo", Exact),
        (".*", "foo", Fail),
        ("abc.def", "abcdef", Fail),
        ("abc.def", "abc.def", Exact),
        ("abc.def", "abcZdef", Fail),
        ("abc?def", "abcZdef", Exact),
        ("abc?def", "abcdef", Fail),
        ("**/foo/bar", "foo/bar", Exact),
        ("**/foo/bar", "dir/foo/bar", Exact),
        ("**/foo/bar", "dir/dir2/foo/bar", Exact),
        ("abc/**", "abc", Fail),
        ("abc/**", "abc/def", Exact),
        ("abc/**", "abc/def/ghi", Exact),
        ("**/.foo", ".foo", Exact),
        ("**/.foo", "bar.foo", Fail),
        ("a(b)c/def", "a(b)c/def", Exact),
        ("a(b)c/def", "a(b)c/xyz", Fail),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", Exact),
        // The rows for non-Windows systems.
        ("a\\\\", "a\\", Exact),
        ("a\\*b", "a*b", Exact),
    ];

    const MULTI: &[(&[&str], &str, Expect)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", Fail),
        (&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", Exact),
        (
            &["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Fail,
        ),
        (&["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", Fail),
    ];

    fn ignore(patterns: &[&str]) -> DockerIgnore {
        DockerIgnore::from_patterns(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
    }

    /// Matches `path` the way the walk does: each parent folder first, passing its results down.
    fn matches_walking(ig: &DockerIgnore, path: &str) -> bool {
        let mut parent: Option<Vec<bool>> = None;
        for dir in parent_folders(path) {
            parent = Some(ig.matches_under(&dir, parent.as_deref()).1);
        }
        ig.matches_under(path, parent.as_deref()).0
    }

    #[test]
    fn single_patterns_match_as_in_moby() {
        for &(pattern, path, expect) in MATCHES {
            let ig = ignore(&[pattern]);
            let case = format!("pattern {pattern:?}, path {path:?}");
            assert_eq!(ig.matches_exact(path), expect == Exact, "exact: {case}");
            assert_eq!(ig.is_excluded(path), expect != Fail, "or parents: {case}");
            assert_eq!(matches_walking(&ig, path), expect != Fail, "walking: {case}");
        }
    }

    #[test]
    fn several_patterns_match_as_in_moby() {
        for &(patterns, path, expect) in MULTI {
            let ig = ignore(patterns);
            let case = format!("patterns {patterns:?}, path {path:?}");
            assert_eq!(ig.is_excluded(path), expect != Fail, "or parents: {case}");
            assert_eq!(matches_walking(&ig, path), expect != Fail, "walking: {case}");
        }
    }

    /// Go's `filepath.Match` table, as moby runs it through its matcher: `Ok(matched)` or a
    /// pattern refused when read.
    const GO_MATCH: &[(&str, &str, Option<bool>)] = &[
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(true)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a\\*b", "a*b", Some(true)),
        ("a\\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        ("[\\]a]", "]", Some(true)),
        ("[\\-]", "-", Some(true)),
        ("[x\\-]", "x", Some(true)),
        ("[x\\-]", "-", Some(true)),
        ("[x\\-]", "z", Some(false)),
        ("[\\-x]", "x", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[\\-x]", "a", Some(false)),
        ("[]a]", "]", None),
        ("[-]", "-", None),
        ("[x-]", "x", None),
        ("[x-]", "-", None),
        ("[x-]", "z", None),
        ("[-x]", "x", None),
        ("[-x]", "-", None),
        ("[-x]", "a", None),
        ("\\", "a", None),
        ("[a-b-c]", "a", None),
        ("[", "a", None),
        ("[^", "a", None),
        ("[^bc", "a", None),
        ("a[", "a", None),
        ("a[", "ab", None),
        ("*x", "xxx", Some(true)),
    ];

    #[test]
    fn go_filepath_match_table() {
        for &(pattern, path, expect) in GO_MATCH {
            let got = DockerIgnore::from_patterns(&[pattern]).map(|ig| ig.is_excluded(path)).ok();
            assert_eq!(got, expect, "pattern {pattern:?}, path {path:?}");
        }
    }

    #[test]
    fn kinds_are_decided_as_in_moby_compile() {
        let glob = |p: &str| matches!(compile(p), Ok(Kind::Glob(_)));
        for p in [
            "*",
            "file*",
            "*file",
            "a*/b",
            "**/**",
            "**/dir2/*",
            "**/dir2/**",
            "**/file*txt",
            "**/**/*.txt",
            "a[b-d]e",
            ".*",
            "abc?def",
        ] {
            assert!(glob(p), "{p:?} is a glob");
        }
        assert_eq!(compile("**"), Ok(Kind::Suffix(String::new())));
        assert_eq!(compile("dir/**"), Ok(Kind::Prefix("dir/".into())));
        assert_eq!(compile("**/dir"), Ok(Kind::Suffix("/dir".into())));
        assert_eq!(compile("**file"), Ok(Kind::Suffix("file".into())));
        assert_eq!(compile("**/foo/bar"), Ok(Kind::Suffix("/foo/bar".into())));
        for p in ["abc.def", "a(b)c/def", "a.|)$(}+{bc", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"] {
            assert_eq!(compile(p), Ok(Kind::Exact), "{p:?}");
        }
        // The tokens of one glob, which moby compiles to `^(.*/)?(.*/)?[^/]*\.txt$`.
        let Ok(Kind::Glob(tokens)) = compile("**/**/*.txt") else { panic!("a glob") };
        let mut want = vec![Token::Folders, Token::Folders, Token::Run];
        want.extend(".txt".chars().map(Token::Char));
        assert_eq!(tokens, want);
    }

    #[test]
    fn single_cases_of_moby_and_the_cli() {
        assert!(ignore(&["*"]).is_excluded("fileutils.go"));
        assert!(ignore(&["*.go"]).is_excluded("fileutils.go"));
        // An exception before the pattern changes nothing.
        assert!(ignore(&["!fileutils.go", "*.go"]).is_excluded("fileutils.go"));
        assert!(!ignore(&["*.go", "!fileutils.go"]).is_excluded("fileutils.go"));
        for folder in ["docs", "docs/", "docs/*"] {
            assert!(!ignore(&[folder, "!docs/README.md"]).is_excluded("docs/README.md"), "{folder}");
        }
        assert!(!ignore(&["*.go"]).is_excluded("."));
        assert!(!ignore(&[]).is_excluded("/any/path/there"));
        assert!(DockerIgnore::from_patterns(&["["]).is_err());
        let bang = DockerIgnore::from_patterns(&["!"]).unwrap_err();
        assert_eq!(bang.reason, "illegal exclusion pattern: \"!\"");
    }

    #[test]
    fn patterns_are_cleaned_and_trimmed() {
        assert_eq!(ignore(&["docs", "config"]).patterns.len(), 2);
        assert_eq!(ignore(&["docs", "config", ""]).patterns.len(), 2);
        assert!(ignore(&["docs", "!docs/README.md"]).has_exceptions());
        assert!(ignore(&["docs", "  !docs/README.md"]).has_exceptions());
        assert!(ignore(&["docs", "!docs/README.md  "]).has_exceptions());
        assert!(!ignore(&["docs"]).has_exceptions());
    }

    /// moby/moby#52203 made a pattern that passes Go's syntax check but is no valid regular
    /// expression fail at every match; berth refuses it when reading.
    #[test]
    fn a_range_out_of_order_is_refused_when_read() {
        let e = DockerIgnore::from_patterns(&["[Local-Only]/"]).unwrap_err();
        assert!(e.reason.contains("out of order"), "{e}");
    }

    #[test]
    fn read_all_reads_lines_as_moby() {
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        let got: Vec<String> = read_lines(content).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]);
        let e = DockerIgnore::parse(content).unwrap_err();
        assert_eq!((e.line, e.pattern.as_str()), (8, "!"));
    }

    #[test]
    fn reading_details() {
        // A BOM, CRLF line ends, a comment only at the start of a line, `/` kept alone.
        let lines = read_lines("\u{feff}a\r\n  # not a comment\n/\n./b/../c//d/\n");
        let got: Vec<_> = lines.iter().map(|(line, p)| (*line, p.as_str())).collect();
        assert_eq!(got, [(1, "a"), (2, "# not a comment"), (3, "/"), (4, "c/d")]);
    }

    #[test]
    fn clean_is_go_filepath_clean() {
        for (path, want) in [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a/./b", "a/b"),
            ("a//b/", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//a", "/a"),
            ("!./a", "!./a"),
            ("!/", "!"),
        ] {
            assert_eq!(clean(path), want, "{path:?}");
        }
    }

    #[test]
    fn walking_into_an_excluded_folder_needs_an_exception_starting_with_it() {
        let ig = ignore(&["dir", "!dir/keep", "!**/other"]);
        assert!(ig.may_reinclude_under("dir"));
        assert!(!ig.may_reinclude_under("di"));
        assert!(!ig.may_reinclude_under("other"));
        assert!(ignore(&["dir", "!dir"]).may_reinclude_under("dir"));
    }

    #[test]
    fn keeping_adds_exceptions_only_for_what_is_excluded() {
        let ig = ignore(&["*", "!Dockerfile"]).keeping(&[".dockerignore", "Dockerfile"]);
        assert_eq!(ig.patterns.len(), 3);
        assert!(!ig.is_excluded(".dockerignore"));
        let ig = ignore(&["docker"]).keeping(&["docker/Dockerfile"]);
        assert!(!ig.is_excluded("docker/Dockerfile"));
        assert!(ig.is_excluded("docker/other"));
        assert!(ig.may_reinclude_under("docker"));
    }

    #[test]
    fn a_pathological_pattern_is_quick() {
        let ig = ignore(&["a*a*a*a*a*a*a*a*a*a*a*b"]);
        let path = "a".repeat(200);
        let started = std::time::Instant::now();
        assert!(!ig.is_excluded(&path));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
    }
}
