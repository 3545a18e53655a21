//! One error type for the whole core. An invalid argument is named so the
//! Python layer can turn it into a precise `ValueError`; a buffer that does
//! not fit becomes a `MemoryError`, a cancelled call a `KeyboardInterrupt`.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum DyclError {
    /// An argument has the wrong shape, range or content.
    #[error("{arg}: {msg}")]
    InvalidArgument { arg: &'static str, msg: String },
    /// The requested work would need more memory than is sensible to allocate.
    #[error("{0}")]
    OutOfMemory(String),
    /// A progress sink asked to stop (under Python: Ctrl-C or a callback
    /// that raised); nothing was returned.
    #[error("computation cancelled by the progress callback")]
    Cancelled,
}

impl DyclError {
    pub fn invalid(arg: &'static str, msg: impl Into<String>) -> Self {
        DyclError::InvalidArgument {
            arg,
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, DyclError>;

/// The first error met by parallel workers that cannot return one (the
/// scratch of a rayon `for_each_init`, say); later ones are dropped.
#[derive(Default)]
pub(crate) struct FirstError(std::sync::Mutex<Option<DyclError>>);

impl FirstError {
    pub(crate) fn record(&self, err: &DyclError) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert_with(|| err.clone());
    }

    /// `Err` with the first recorded error, if any.
    pub(crate) fn into_result(self) -> Result<()> {
        match self.0.into_inner() {
            Ok(None) => Ok(()),
            Ok(Some(err)) => Err(err),
            Err(poisoned) => poisoned.into_inner().map_or(Ok(()), Err),
        }
    }
}
