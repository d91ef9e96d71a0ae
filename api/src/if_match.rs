//! [`IfMatch`]: the `If-Match` header of a write with optimistic concurrency
//! (RFC 9110 §13.1.1), read before the handler runs.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::IF_MATCH;
use actix_web::{FromRequest, HttpRequest};

use crate::error::{ApiError, Code};

/// The versions a client says it last read: `*` (any current version), or a
/// list of entity tags. Required: a write without it gets 428, a header that
/// is not entity tags at all 400. Whether a tag names the current version is
/// the handler's question ([`IfMatch::matches`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<EntityTag>),
}

/// One entity tag of the list, `"3"` or `W/"3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/`: a weak tag never matches for a write (strong comparison).
    pub weak: bool,
    /// The tag between its quotes.
    pub opaque: String,
}

impl IfMatch {
    /// Parses the header's value.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        text.split(',')
            .map(str::trim)
            .map(|tag| {
                let (weak, opaque) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                opaque
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|t| !t.contains('"'))
                    .map(|opaque| EntityTag {
                        weak,
                        opaque: opaque.to_owned(),
                    })
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            Code::InvalidIfMatch,
                            "If-Match must hold entity tags such as \"3\", or *",
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self::Tags)
    }

    /// Whether the header names `version` (whose tag is `"<version>"`) by
    /// strong comparison: `*`, or a strong tag equal to it. A tag that is no
    /// version of ours (`"stale"`) simply does not match.
    pub fn matches(&self, version: u64) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags
                .iter()
                .any(|tag| !tag.weak && tag.opaque.parse::<u64>() == Ok(version)),
        }
    }
}

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match request.headers().get(IF_MATCH) {
            None => Err(ApiError::PreconditionRequired),
            Some(value) => value
                .to_str()
                .map_err(|_| {
                    ApiError::bad_request(Code::InvalidIfMatch, "If-Match is not readable text")
                })
                .and_then(Self::parse),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_matches_any_version_and_a_list_matches_its_strong_tags_only() {
        assert!(IfMatch::parse("*").expect("valid").matches(7));
        let list = IfMatch::parse(r#""2", W/"3" , "stale""#).expect("valid");
        assert!(list.matches(2));
        assert!(!list.matches(3), "a weak tag never matches for a write");
        assert!(!list.matches(4));
    }

    #[test]
    fn a_header_that_is_not_entity_tags_is_a_bad_request() {
        for text in ["3", "\"3", "\"3\"\"", "\"3\", 4", ""] {
            let error = IfMatch::parse(text).expect_err(text);
            assert_eq!(error.code(), Code::InvalidIfMatch, "{text}");
        }
    }
}
