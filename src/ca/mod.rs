//! capf's certificate authority: its identities and the LSCs it issues.
//! (API skeleton: bodies marked `todo!()` are filled in by the CA work.)
