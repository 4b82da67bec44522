//! Test and benchmark support (feature `testing`): a Chrome DevTools Protocol client that drives headless
//! Chromium ([`cdp`]) and a generated batch of records with pictures ([`synthetic`]).

pub mod cdp;
pub mod synthetic;
