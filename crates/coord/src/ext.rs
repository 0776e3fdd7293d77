//! Conveniences built on the contract, usable with any backend.

use async_trait::async_trait;

use crate::{CreateMode, CreateOptions, Error, Result, Session, path};

/// Conveniences over [`Session`]: `mkdir -p`, recursive delete, get-or-create.
#[async_trait]
pub trait SessionExt: Session {
    /// Creates `path` and any missing ancestors as persistent nodes with empty data and
    /// `options`' ACL (ancestors) and options (the node itself). Succeeds if the node already
    /// exists. Returns true if this call created the node.
    async fn create_all(&self, path: &str, data: &[u8], options: &CreateOptions) -> Result<bool> {
        path::validate_path(path, false)?;
        if path == "/" {
            return Ok(false);
        }
        match self.create(path, data, options).await {
            Ok(_) => return Ok(true),
            Err(Error::NodeExists) => return Ok(false),
            Err(Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        let parents = CreateOptions::new(CreateMode::Persistent).with_acls(options.acls.clone());
        let mut prefix = String::new();
        let segments: Vec<&str> = path[1..].split('/').collect();
        for seg in &segments[..segments.len() - 1] {
            prefix.push('/');
            prefix.push_str(seg);
            match self.create(&prefix, b"", &parents).await {
                Ok(_) | Err(Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        match self.create(path, data, options).await {
            Ok(_) => Ok(true),
            Err(Error::NodeExists) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `path` and its ancestors as empty persistent open nodes if missing.
    async fn ensure_path(&self, path: &str) -> Result<()> {
        self.create_all(path, b"", &CreateOptions::new(CreateMode::Persistent))
            .await
            .map(|_| ())
    }

    /// Deletes `path` and everything below it, depth first. Nodes that vanish meanwhile are
    /// fine; a node created below meanwhile makes it retry that level. Not atomic.
    async fn delete_recursive(&self, path: &str) -> Result<()> {
        path::validate_path(path, false)?;
        let mut stack = vec![path.to_string()];
        while let Some(p) = stack.last().cloned() {
            let children = match self.get_children(&p).await {
                Ok(c) => c,
                Err(Error::NoNode) => {
                    stack.pop();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if children.is_empty() {
                match self.delete(&p, crate::ANY_VERSION).await {
                    Ok(()) | Err(Error::NoNode) => {
                        stack.pop();
                    }
                    Err(Error::NotEmpty) => {}
                    Err(e) => return Err(e),
                }
            } else {
                stack.extend(children.iter().map(|c| path::join(&p, c)));
            }
        }
        Ok(())
    }

    /// Reads `path`, creating it (and its ancestors) with `data` if missing.
    async fn get_or_create(&self, path: &str, data: &[u8]) -> Result<(Vec<u8>, crate::Stat)> {
        loop {
            match self.get_data(path).await {
                Ok(v) => return Ok(v),
                Err(Error::NoNode) => {
                    self.create_all(path, data, &CreateOptions::new(CreateMode::Persistent))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl<T: Session + ?Sized> SessionExt for T {}
