//! Users in Redis: a hash per user, a unique email index and a creation index.

use redis::Value;
use uuid::Uuid;

use super::model::{Role, StoredUser, User};
use crate::redis::keys::{self, Keys};
use crate::redis::{Redis, RedisError, scripts, value};

/// Which sessions an update ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndSessions {
    None,
    All,
    AllBut(Uuid),
}

#[derive(Debug)]
pub struct UserStore<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
}

/// Fields of a user to be created.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

impl UserStore<'_> {
    /// Creates the user, or returns the id of the user that holds the email.
    pub async fn create(&self, new: NewUser<'_>) -> Result<Result<User, Uuid>, RedisError> {
        let id = Uuid::new_v4();
        let now = chrono::Utc::now();
        let created_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut pipe = redis::pipe();
        pipe.add_command(
            scripts::REGISTER
                .call(&[
                    self.keys.user_email(new.email),
                    self.keys.user(id),
                    self.keys.users_index(),
                ])
                .arg(id.to_string())
                .arg(new.email)
                .arg(new.name)
                .arg(new.role.as_str())
                .arg(new.password_hash)
                .arg(&created_at)
                .arg(keys::created_member(now.timestamp_millis(), id))
                .to_owned(),
        );
        let (reply,): (Vec<Value>,) = self.redis.write("register", &pipe).await?;
        match reply.as_slice() {
            [Value::Int(1)] => Ok(Ok(User {
                id,
                email: new.email.to_owned(),
                name: new.name.to_owned(),
                role: new.role,
                disabled: false,
                created_at,
            })),
            [Value::Int(0), existing] => value::text(existing)
                .and_then(|id| id.parse().ok())
                .map(Err)
                .ok_or_else(|| {
                    RedisError::Unexpected("email index holds an invalid id".to_owned())
                }),
            _ => Err(RedisError::Unexpected(
                "register script: unexpected reply".to_owned(),
            )),
        }
    }

    /// A user as last confirmed on the replicas.
    pub async fn get(&self, id: Uuid) -> Result<Option<StoredUser>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.user(id));
        let (fields,): (std::collections::HashMap<String, String>,) =
            self.redis.read("user_get", &pipe).await?;
        if fields.is_empty() {
            Ok(None)
        } else {
            StoredUser::from_fields(&fields).map(Some)
        }
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<StoredUser>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.keys.user_email(email));
        let (id,): (Option<String>,) = self.redis.read("user_by_email", &pipe).await?;
        match id.and_then(|id| id.parse().ok()) {
            Some(id) => self.get(id).await,
            None => Ok(None),
        }
    }

    /// Users in creation order, after the index member `after`.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, Option<String>), RedisError> {
        let start = after.map_or_else(|| "-".to_owned(), |member| format!("({member}"));
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.keys.users_index())
            .arg(start)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
        let (mut members,): (Vec<String>,) = self.redis.read("users_list", &pipe).await?;
        let more = members.len() > limit;
        members.truncate(limit);
        let mut pipe = redis::pipe();
        for member in &members {
            let id = keys::member_id(member)
                .ok_or_else(|| RedisError::Unexpected("bad users index member".to_owned()))?;
            pipe.cmd("HGETALL").arg(self.keys.user(id));
        }
        let records: Vec<std::collections::HashMap<String, String>> = if members.is_empty() {
            Vec::new()
        } else {
            self.redis.read("users_list", &pipe).await?
        };
        let users = records
            .iter()
            .filter(|fields| !fields.is_empty())
            .map(|fields| StoredUser::from_fields(fields).map(|stored| stored.user))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more { members.last().cloned() } else { None };
        Ok((users, next))
    }

    /// Sets `fields` and ends sessions as asked, atomically. `None` if no such user.
    pub async fn update(
        &self,
        id: Uuid,
        fields: &[(&str, String)],
        end: EndSessions,
    ) -> Result<Option<StoredUser>, RedisError> {
        let (mode, keep) = match end {
            EndSessions::None => ("none", String::new()),
            EndSessions::All => ("all", String::new()),
            EndSessions::AllBut(session) => ("others", session.to_string()),
        };
        let mut call =
            scripts::UPDATE_USER.call(&[self.keys.user(id), self.keys.user_sessions(id)]);
        call.arg(self.keys.session_prefix()).arg(mode).arg(keep);
        for (field, value) in fields {
            call.arg(*field).arg(value);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (fields,): (std::collections::HashMap<String, String>,) =
            self.redis.write("user_update", &pipe).await?;
        if fields.is_empty() {
            Ok(None)
        } else {
            StoredUser::from_fields(&fields).map(Some)
        }
    }
}
