/// Response extension: how many attempts a call took (1 = no retry). Set by `RetryLayer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts(pub u32);
