//! The standalone front end's input: YAML files (multi-document, or folders of them) holding
//! DockerHosts, ContainerSets, Secrets and ConfigMaps.
//!
//! Everything is read and checked before any host is touched: [`load`] parses and validates
//! each object on its own, [`resolve`] checks what objects say about each other (Secret keys,
//! pull secrets, host [`policy`]) and turns the lot into desired state per host. Every error
//! names the file, the object and the field.

pub mod build_context;
pub mod images;
pub mod load;
pub mod policy;
pub mod resolve;

pub use load::{Input, Located, Origin, load};
pub use resolve::{Resolved, resolve};

use std::fmt;

/// One problem with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The file, and the document's index in it when known.
    pub origin: String,
    /// `ContainerSet default/echo`, when the problem belongs to an object.
    pub object: Option<String>,
    /// The field path, when the problem belongs to a field.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(o) = &self.object {
            write!(f, ": {}", cut(o, MAX_SHOWN_NAME))?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {}", cut(field, MAX_SHOWN_NAME))?;
        }
        write!(f, ": {}", cut(&self.message, MAX_SHOWN_MESSAGE))
    }
}

/// Bounds on what one error prints. Validation quotes values short already; these catch the
/// rest (a megabyte-long unknown field name, a parser's message quoting an enormous value).
const MAX_SHOWN_NAME: usize = 300;
const MAX_SHOWN_MESSAGE: usize = 2000;

/// `s`, cut after `max` characters with a note of how much was left out.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((at, _)) => format!("{}... ({} more characters)", &s[..at], s[at..].chars().count()).into(),
    }
}

/// All the problems found, so a user fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
