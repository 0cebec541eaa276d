//! `midge passwd`: manages password files as `mosquitto_passwd` does.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use midge_auth::passwd::{
    check_username, PasswdError, PasswordFile, Scheme, MAX_PASSWORD_LEN, PBKDF2_DEFAULT_ITERATIONS,
};
use midge_auth::scram;
use midge_auth::FileError;

pub(crate) const HELP: &str = "\
Usage: midge passwd [-H HASH | --scram] [-c | -D] passwordfile username
       midge passwd [-H HASH | --scram] [-c] -b passwordfile username password
       midge passwd [-H HASH | --scram] -U passwordfile

Without -b the password is asked for twice: on the terminal without echo, or, when stdin is
not a terminal, as two lines of stdin.

Hashes (-H): argon2id (the default; read by midge), sha512-pbkdf2 (mosquitto's $7$, read by
mosquitto 2.0 too; 210000 iterations unless -I says otherwise). --scram stores SCRAM-SHA-256
credentials (4096 iterations unless -I says otherwise), which midge accepts both as plain
CONNECT passwords and for MQTT 5.0 enhanced authentication with SCRAM-SHA-256.

Unlike mosquitto_passwd, -U keeps entries that are already hashed, so running it twice is
harmless, and the password is all of the line after the first ':'. Comments and blank lines
are kept. The file is replaced atomically: a new file has mode 0600, a replaced one keeps its
owner and group, and its permissions less those for others.

Exit codes:
  0  success
  1  error: invalid arguments, a file that cannot be read or written, a user not found (-D),
     an empty password
  2  the two passwords typed do not match";

/// `midge passwd` options. The flags follow `mosquitto_passwd`'s.
#[derive(Debug, Args)]
pub(crate) struct PasswdArgs {
    /// Create a new password file; an existing one is overwritten.
    #[arg(short = 'c')]
    create: bool,
    /// Delete the user rather than set its password.
    #[arg(short = 'D')]
    delete: bool,
    /// Batch mode: the password is the last argument.
    #[arg(short = 'b')]
    batch: bool,
    /// Update a file of plain-text user:password lines to hashed passwords.
    #[arg(short = 'U')]
    update: bool,
    /// The hash for new entries: argon2id (the default) or sha512-pbkdf2.
    #[arg(short = 'H', value_name = "HASH")]
    hash: Option<String>,
    /// Store SCRAM-SHA-256 credentials: plain CONNECT passwords and MQTT 5.0 enhanced
    /// authentication both work with them.
    #[arg(long)]
    scram: bool,
    /// Iterations, for --scram (default 4096) or -H sha512-pbkdf2 (default 210000).
    #[arg(short = 'I', long, value_name = "N", allow_negative_numbers = true)]
    iterations: Option<i64>,
    /// The password file.
    #[arg(value_name = "passwordfile")]
    file: Option<PathBuf>,
    /// The user.
    #[arg(value_name = "username")]
    username: Option<OsString>,
    /// The password (with -b).
    #[arg(value_name = "password", allow_hyphen_values = true)]
    password: Option<OsString>,
}

/// Why the command failed: its exit code and message.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// What to do, once the arguments are checked.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Print the usage and exit 1, as `mosquitto_passwd` with no arguments does.
    Usage,
    /// Write a new file with one user.
    Create {
        file: PathBuf,
        username: String,
        password: Option<Vec<u8>>,
        scheme: Scheme,
    },
    /// Set a user's password in an existing file.
    Set {
        file: PathBuf,
        username: String,
        password: Option<Vec<u8>>,
        scheme: Scheme,
    },
    /// Remove a user from an existing file.
    Delete { file: PathBuf, username: String },
    /// Hash a plain-text file in place.
    Update { file: PathBuf, scheme: Scheme },
}

/// Runs `midge passwd`.
pub(crate) fn main(args: PasswdArgs) -> ExitCode {
    let result = plan(args).and_then(|action| {
        if action == Action::Usage {
            println!("{HELP}");
            return Err(Failure::new(String::new()));
        }
        if let Some(warning) = weak_iterations(&action) {
            eprintln!("{warning}");
        }
        run(action)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("{}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

/// Checks the arguments as `mosquitto_passwd` does, with its messages.
fn plan(args: PasswdArgs) -> Result<Action, Failure> {
    let PasswdArgs {
        create,
        delete,
        batch,
        update,
        hash,
        scram,
        iterations,
        file,
        username,
        password,
    } = args;
    let given = usize::from(file.is_some())
        + usize::from(username.is_some())
        + usize::from(password.is_some());
    let nothing = !(create || delete || batch || update || scram)
        && hash.is_none()
        && iterations.is_none()
        && given == 0;
    if nothing {
        return Ok(Action::Usage);
    }
    for (a, b, both) in [
        (create, delete, "-c and -D"),
        (create, update, "-c and -U"),
        (delete, update, "-D and -U"),
        (delete, batch, "-b and -D"),
    ] {
        if a && b {
            return Err(Failure::new(format!(
                "Error: {both} cannot be used together."
            )));
        }
    }
    let scheme = scheme(hash.as_deref(), scram, iterations, delete)?;

    // The positional arguments each mode needs.
    let needed = match (create, delete, update, batch) {
        (true, _, _, true) => 3,
        (true, _, _, false) | (_, true, _, _) => 2,
        (_, _, true, _) => 1,
        (_, _, _, true) => 3,
        _ => 2,
    };
    if given != needed {
        let message = if create && batch {
            "Error: -c argument given but password file, username, or password missing."
        } else if create {
            "Error: -c argument given but password file or username missing."
        } else if delete {
            "Error: -D argument given but password file or username missing."
        } else if update {
            "Error: -U argument given but password file missing."
        } else {
            return Ok(Action::Usage);
        };
        return Err(Failure::new(message));
    }
    let file = file.ok_or_else(|| Failure::new("Error: password file missing."))?;
    if update {
        return Ok(Action::Update { file, scheme });
    }
    let username = username
        .ok_or_else(|| Failure::new("Error: username missing."))?
        .into_string()
        .map_err(|_| Failure::new("Error: user name must be valid UTF-8."))?;
    check_username(&username).map_err(|e| Failure::new(format!("Error: {e}.")))?;
    let password = password.map(|p| os_bytes(&p)).transpose()?;
    if password
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PASSWORD_LEN)
    {
        return Err(Failure::new(
            "Error: Password must be less than 65536 characters long.",
        ));
    }
    Ok(if create {
        Action::Create {
            file,
            username,
            password,
            scheme,
        }
    } else if delete {
        Action::Delete { file, username }
    } else {
        Action::Set {
            file,
            username,
            password,
            scheme,
        }
    })
}

/// The scheme that `-H`, `--scram` and `-I` ask for.
fn scheme(
    hash: Option<&str>,
    scram: bool,
    iterations: Option<i64>,
    delete: bool,
) -> Result<Scheme, Failure> {
    if scram && hash.is_some() {
        return Err(Failure::new(
            "Error: --scram and -H cannot be used together.",
        ));
    }
    let iterations = match iterations {
        None => None,
        Some(n) if n < 1 => {
            return Err(Failure::new("Error: Number of iterations must be > 0."));
        }
        Some(n) => Some(u32::try_from(n).map_err(|_| {
            Failure::new(format!(
                "Error: Number of iterations must be at most {}.",
                u32::MAX
            ))
        })?),
    };
    let scheme = match (scram, hash) {
        (true, _) => Scheme::Scram {
            iterations: iterations.unwrap_or(scram::DEFAULT_ITERATIONS),
        },
        (false, None | Some("argon2id")) => {
            if iterations.is_some() && !delete {
                return Err(Failure::new(
                    "Error: -I applies to --scram and -H sha512-pbkdf2 only; argon2id uses \
                     its default parameters.",
                ));
            }
            Scheme::Argon2id
        }
        (false, Some("sha512-pbkdf2")) => Scheme::Pbkdf2Sha512 {
            iterations: iterations.unwrap_or(PBKDF2_DEFAULT_ITERATIONS),
        },
        (false, Some("sha512")) => {
            return Err(Failure::new(
                "Error: -H sha512 is not written: one round of SHA-512 is too fast to resist \
                 guessing. Use argon2id or sha512-pbkdf2.",
            ));
        }
        (false, Some(other)) => {
            return Err(Failure::new(format!("Error: Unknown hash type '{other}'")));
        }
    };
    Ok(scheme)
}

/// A warning for an iteration count below what the scheme's standard asks.
fn weak_iterations(action: &Action) -> Option<String> {
    let (Action::Create { scheme, .. }
    | Action::Set { scheme, .. }
    | Action::Update { scheme, .. }) = action
    else {
        return None;
    };
    match *scheme {
        Scheme::Scram { iterations } if iterations < scram::DEFAULT_ITERATIONS => Some(format!(
            "Warning: {iterations} iterations is below RFC 7677's minimum of {} for \
             SCRAM-SHA-256.",
            scram::DEFAULT_ITERATIONS
        )),
        _ => None,
    }
}

/// An argument's bytes: any bytes on Unix, UTF-8 elsewhere.
fn os_bytes(arg: &OsStr) -> Result<Vec<u8>, Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(arg.as_bytes().to_vec())
    }
    #[cfg(not(unix))]
    {
        arg.to_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| Failure::new("Error: the password must be valid UTF-8."))
    }
}

fn run(action: Action) -> Result<(), Failure> {
    match action {
        Action::Usage => Ok(()),
        Action::Create {
            file,
            username,
            password,
            scheme,
        } => {
            let password = match password {
                Some(password) => password,
                None => ask_password()?,
            };
            let mut passwords = PasswordFile::new();
            set(&mut passwords, &username, &password, scheme)?;
            write(&passwords, &file)
        }
        Action::Set {
            file,
            username,
            password,
            scheme,
        } => {
            let mut passwords = PasswordFile::read(&file).map_err(read_failure)?;
            let password = match password {
                Some(password) => password,
                None => ask_password()?,
            };
            set(&mut passwords, &username, &password, scheme)?;
            write(&passwords, &file)
        }
        Action::Delete { file, username } => {
            let mut passwords = PasswordFile::read(&file).map_err(read_failure)?;
            if !passwords.remove(&username) {
                return Err(Failure::new(format!(
                    "Warning: User {username} not found in password file."
                )));
            }
            write(&passwords, &file)
        }
        Action::Update { file, scheme } => {
            let passwords = PasswordFile::read_plaintext(&file, scheme).map_err(read_failure)?;
            write(&passwords, &file)
        }
    }
}

fn set(
    passwords: &mut PasswordFile,
    username: &str,
    password: &[u8],
    scheme: Scheme,
) -> Result<(), Failure> {
    passwords
        .set_password(username, password, scheme)
        .map_err(|e| match e {
            PasswdError::PasswordTooLong => {
                Failure::new("Error: Password must be less than 65536 characters long.")
            }
            e => Failure::new(format!("Error: Unable to hash password: {e}.")),
        })
}

fn write(passwords: &PasswordFile, file: &Path) -> Result<(), Failure> {
    passwords.write(file).map_err(|e| {
        Failure::new(format!(
            "Error: Unable to write password file {}: {e}.",
            file.display()
        ))
    })
}

fn read_failure(e: FileError) -> Failure {
    match e {
        FileError::Io { path, source } => Failure::new(format!(
            "Error: Unable to open password file {}: {source}.",
            path.display()
        )),
        // "<file>: line <n>: <reason>"
        e => Failure::new(format!("Error: {e}.")),
    }
}

/// Asks for the password twice, as `mosquitto_passwd` does: exit 1 if it is empty, 2 if the
/// two do not match.
fn ask_password() -> Result<Vec<u8>, Failure> {
    let first = read_password("Password: ")?;
    if first.is_empty() {
        return Err(Failure::new("Error: Empty password."));
    }
    let second = read_password("Reenter password: ")?;
    if first != second {
        return Err(Failure {
            code: 2,
            message: "Error: Passwords do not match.".into(),
        });
    }
    Ok(first)
}

/// Reads one password: from the terminal without echo when stdin is one, else a line of
/// stdin.
fn read_password(prompt: &str) -> Result<Vec<u8>, Failure> {
    let failure = |e: io::Error| Failure::new(format!("Error: Unable to read the password: {e}."));
    if io::stdin().is_terminal() {
        return rpassword::prompt_password(prompt)
            .map(String::into_bytes)
            .map_err(failure);
    }
    let mut stderr = io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let line = read_line(&mut io::stdin().lock()).map_err(failure)?;
    let _ = writeln!(stderr);
    line.ok_or_else(|| Failure::new("Error: Password must be less than 65536 characters long."))
}

/// One line of `input` without its line ending; `None` if it is longer than a password may
/// be. At the end of the input, an empty line.
fn read_line(input: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    input
        .take((MAX_PASSWORD_LEN + 2) as u64)
        .read_until(b'\n', &mut line)?;
    if let Some(rest) = line.strip_suffix(b"\n") {
        let len = rest.strip_suffix(b"\r").unwrap_or(rest).len();
        line.truncate(len);
    }
    Ok((line.len() <= MAX_PASSWORD_LEN).then_some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PasswdArgs,
    }

    fn plan_of(args: &[&str]) -> Result<Action, Failure> {
        let cli = Cli::try_parse_from(std::iter::once("passwd").chain(args.iter().copied()))
            .expect("clap parses");
        plan(cli.args)
    }

    fn message(args: &[&str]) -> String {
        match plan_of(args) {
            Ok(action) => panic!("{args:?} gave {action:?}"),
            Err(failure) => {
                assert_eq!(failure.code, 1, "{args:?}");
                failure.message
            }
        }
    }

    #[test]
    fn argument_errors_are_mosquitto_passwds() {
        assert_eq!(plan_of(&[]), Ok(Action::Usage));
        assert_eq!(plan_of(&["-b", "f", "u"]), Ok(Action::Usage));
        assert_eq!(plan_of(&["f"]), Ok(Action::Usage));
        for (args, expected) in [
            (
                &["-c", "-D"][..],
                "Error: -c and -D cannot be used together.",
            ),
            (&["-c", "-U"], "Error: -c and -U cannot be used together."),
            (&["-U", "-D"], "Error: -D and -U cannot be used together."),
            (&["-b", "-D"], "Error: -b and -D cannot be used together."),
            (
                &["-c", "-b"],
                "Error: -c argument given but password file, username, or password missing.",
            ),
            (
                &["-c"],
                "Error: -c argument given but password file or username missing.",
            ),
            (
                &["-D"],
                "Error: -D argument given but password file or username missing.",
            ),
            (
                &["-U"],
                "Error: -U argument given but password file missing.",
            ),
            (
                &["-U", "f", "u"],
                "Error: -U argument given but password file missing.",
            ),
            (
                &["-D", "pwfile", "bad-username:"],
                "Error: user name must not contain the ':' character.",
            ),
            (
                &["-D", "pwfile", "bad-username\n"],
                "Error: user name must not contain control characters.",
            ),
            (
                &["-H", "nohash", "f", "u"],
                "Error: Unknown hash type 'nohash'",
            ),
            (
                &["-I", "0", "--scram", "f", "u"],
                "Error: Number of iterations must be > 0.",
            ),
            (
                &["-I", "-3", "--scram", "f", "u"],
                "Error: Number of iterations must be > 0.",
            ),
        ] {
            assert_eq!(message(args), expected, "{args:?}");
        }
        let long = "a".repeat(65_536);
        assert_eq!(
            message(&["-D", "pwfile", &long]),
            "Error: user name must be at most 65535 bytes long."
        );
        assert_eq!(
            message(&["-b", "f", "u", &long]),
            "Error: Password must be less than 65536 characters long."
        );
        assert!(message(&["-H", "sha512", "f", "u"]).contains("too fast"));
        assert!(message(&["--scram", "-H", "argon2id", "f", "u"]).contains("together"));
        assert!(message(&["-I", "5000", "f", "u"]).contains("-I applies to"));
    }

    #[test]
    fn modes_and_schemes() {
        assert_eq!(
            plan_of(&["-c", "-b", "f", "u", "-pw"]),
            Ok(Action::Create {
                file: "f".into(),
                username: "u".into(),
                password: Some(b"-pw".to_vec()),
                scheme: Scheme::Argon2id,
            })
        );
        assert_eq!(
            plan_of(&["f", "u", "--scram"]),
            Ok(Action::Set {
                file: "f".into(),
                username: "u".into(),
                password: None,
                scheme: Scheme::SCRAM_DEFAULT,
            })
        );
        assert_eq!(
            plan_of(&["-U", "-H", "sha512-pbkdf2", "-I", "1000", "f"]),
            Ok(Action::Update {
                file: "f".into(),
                scheme: Scheme::Pbkdf2Sha512 { iterations: 1000 },
            })
        );
        assert_eq!(
            plan_of(&["-H", "sha512-pbkdf2", "-b", "f", "u", "p"]).map(|a| match a {
                Action::Set { scheme, .. } => scheme,
                other => panic!("{other:?}"),
            }),
            Ok(Scheme::PBKDF2_DEFAULT)
        );
        assert_eq!(
            plan_of(&["-D", "f", "u"]),
            Ok(Action::Delete {
                file: "f".into(),
                username: "u".into(),
            })
        );
        let weak = plan_of(&["--scram", "--iterations", "100", "f", "u"]).unwrap();
        assert!(weak_iterations(&weak).is_some_and(|w| w.contains("RFC 7677")));
    }

    #[test]
    fn stdin_lines_are_read_bounded() {
        let mut input = io::Cursor::new(b"first\r\nsecond\nlast".to_vec());
        assert_eq!(read_line(&mut input).unwrap(), Some(b"first".to_vec()));
        assert_eq!(read_line(&mut input).unwrap(), Some(b"second".to_vec()));
        assert_eq!(read_line(&mut input).unwrap(), Some(b"last".to_vec()));
        assert_eq!(read_line(&mut input).unwrap(), Some(Vec::new()));
        let mut long = vec![b'x'; MAX_PASSWORD_LEN];
        long.push(b'\n');
        assert_eq!(
            read_line(&mut io::Cursor::new(long.clone()))
                .unwrap()
                .map(|l| l.len()),
            Some(MAX_PASSWORD_LEN)
        );
        long.insert(0, b'x');
        assert_eq!(read_line(&mut io::Cursor::new(long)).unwrap(), None);
    }
}
