//! The view's tree: adding directories and files while building (names unique per
//! directory, a name never both a file and a directory), and the queries the mount asks —
//! attributes, lookup, listings, paths. Inode `n` is node `n - 1`.

use std::collections::BTreeMap;

use super::{Attr, DirEntry, Extent, FileKind, Ino, Node, View, ROOT_INO};
use crate::error::ViewError;

impl View {
    pub(super) fn add_dir(&mut self, parent: Ino, name: &str) -> Result<Ino, ViewError> {
        if let Node::Dir { children } = &self.nodes[(parent - 1) as usize] {
            if let Some(&ino) = children.get(name) {
                return match self.nodes[(ino - 1) as usize] {
                    Node::Dir { .. } => Ok(ino),
                    Node::File { .. } => {
                        Err(ViewError::Layout(format!("view name {name:?} is both a file and a directory")))
                    }
                };
            }
        }
        self.nodes.push(Node::Dir { children: BTreeMap::new() });
        let ino = self.nodes.len() as Ino;
        self.link(parent, name, ino)?;
        Ok(ino)
    }

    pub(super) fn add_file(
        &mut self,
        parent: Ino,
        name: &str,
        size: u64,
        extents: Vec<Extent>,
    ) -> Result<Ino, ViewError> {
        self.nodes.push(Node::File { size, extents });
        let ino = self.nodes.len() as Ino;
        self.link(parent, name, ino)?;
        Ok(ino)
    }

    fn link(&mut self, parent: Ino, name: &str, ino: Ino) -> Result<(), ViewError> {
        match &mut self.nodes[(parent - 1) as usize] {
            Node::Dir { children } => {
                if children.insert(name.to_string(), ino).is_some() {
                    return Err(ViewError::Layout(format!("two view entries named {name:?}")));
                }
                Ok(())
            }
            Node::File { .. } => Err(ViewError::NotADirectory(parent)),
        }
    }

    /// Attributes of an inode.
    pub fn attr(&self, ino: Ino) -> Result<Attr, ViewError> {
        Ok(match self.node(ino)? {
            Node::Dir { children } => {
                let subdirs =
                    children.values().filter(|&&c| matches!(self.nodes[(c - 1) as usize], Node::Dir { .. })).count();
                Attr { ino, kind: FileKind::Dir, size: 0, mtime: self.mtime, nlink: 2 + subdirs as u32 }
            }
            Node::File { size, .. } => Attr { ino, kind: FileKind::File, size: *size, mtime: self.mtime, nlink: 1 },
        })
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, ViewError> {
        match self.node(parent)? {
            Node::Dir { children } => match children.get(name) {
                Some(&ino) => self.attr(ino),
                None => Err(ViewError::NotFound(name.into())),
            },
            Node::File { .. } => Err(ViewError::NotADirectory(parent)),
        }
    }

    /// A directory's entries (without `.` and `..`), in name order.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, ViewError> {
        match self.node(ino)? {
            Node::Dir { children } => Ok(children
                .iter()
                .map(|(name, &c)| DirEntry {
                    ino: c,
                    kind: if matches!(self.nodes[(c - 1) as usize], Node::Dir { .. }) {
                        FileKind::Dir
                    } else {
                        FileKind::File
                    },
                    name: name.clone(),
                })
                .collect()),
            Node::File { .. } => Err(ViewError::NotADirectory(ino)),
        }
    }

    /// Every file of the view with its size, by path, in name order.
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((ino, prefix)) = stack.pop() {
            if let Ok(entries) = self.readdir(ino) {
                for e in entries.into_iter().rev() {
                    let path = if prefix.is_empty() { e.name.clone() } else { format!("{prefix}/{}", e.name) };
                    match e.kind {
                        FileKind::Dir => stack.push((e.ino, path)),
                        FileKind::File => out.push((path, self.attr(e.ino).map_or(0, |a| a.size))),
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Looks a `/`-separated path up from the root (`""` is the root).
    pub fn resolve(&self, path: &str) -> Result<Attr, ViewError> {
        let mut a = self.attr(ROOT_INO)?;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            a = self.lookup(a.ino, seg)?;
        }
        Ok(a)
    }
}
