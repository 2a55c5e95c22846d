//! The search space of `moldesign`: SMILES read from a table or a SMILES file, or generated on
//! the machine — small molecules in the spirit of QM9 (at most 9 heavy atoms of C, N, O and F,
//! valences respected, rings included), drawn by a seeded random growth of molecular graphs and
//! canonicalised, checked and deduplicated by Open Babel.

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Reads SMILES from `path`: a whitespace-separated table whose header has a `smiles` column
/// (the Python suite's `QM9-search.tsv`), or a SMILES file (the first token of each line).
/// Blank lines and lines starting with `#` are skipped; duplicates are kept once, in file order.
pub fn read_dataset(path: &Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("app.dataset {}: cannot read: {}", path.display(), e))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(first) = lines.next() else {
        return Err(format!("app.dataset {} holds no molecules", path.display()));
    };
    let header: Vec<&str> = first.split_whitespace().collect();
    let (column, rows): (usize, Vec<&str>) = match header.iter().position(|h| h.eq_ignore_ascii_case("smiles")) {
        Some(c) => (c, lines.collect()),
        None => (0, std::iter::once(first).chain(lines).collect()),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let smiles = row.split_whitespace().nth(column).ok_or_else(|| {
            format!("app.dataset {}: row {} has no column {} (smiles)", path.display(), i + 2, column + 1)
        })?;
        if seen.insert(smiles) {
            out.push(smiles.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!("app.dataset {} holds no molecules", path.display()));
    }
    Ok(out)
}

/// Heavy atoms of the generated space: symbol and valence (implicit hydrogens fill the rest).
const ELEMENTS: [(&str, u8); 4] = [("C", 4), ("N", 3), ("O", 2), ("F", 1)];
/// Relative frequencies of C, N, O, F (roughly QM9's).
const ELEMENT_WEIGHTS: [u32; 4] = [70, 14, 13, 3];
/// Relative frequencies of 1..=9 heavy atoms: mostly large molecules, as in QM9.
const SIZE_WEIGHTS: [u32; 9] = [1, 1, 2, 3, 5, 8, 12, 16, 20];
/// The most heavy atoms of a generated molecule.
pub const MAX_HEAVY_ATOMS: usize = 9;

/// A molecular graph of heavy atoms: element indices into [`ELEMENTS`] and bonds `(a, b, order)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    atoms: Vec<usize>,
    bonds: Vec<(usize, usize, u8)>,
}

impl Graph {
    /// Bond orders summed per atom.
    fn used(&self) -> Vec<u8> {
        let mut used = vec![0u8; self.atoms.len()];
        for &(a, b, o) in &self.bonds {
            used[a] += o;
            used[b] += o;
        }
        used
    }

    /// Valence each atom has left.
    fn free(&self) -> Vec<u8> {
        self.used().iter().zip(&self.atoms).map(|(u, &e)| ELEMENTS[e].1 - u).collect()
    }

    /// Whether atom `a` has a double bond.
    fn has_double(&self, a: usize) -> bool {
        self.bonds.iter().any(|&(x, y, o)| o == 2 && (x == a || y == a))
    }

    /// Atoms that are linear (sp): a triple bond, or two double bonds (an allene's centre);
    /// no small ring may pass through them.
    fn linear(&self) -> Vec<bool> {
        (0..self.atoms.len())
            .map(|i| {
                let orders = self.bonds.iter().filter(|&&(a, b, _)| a == i || b == i).map(|b| b.2);
                orders.clone().any(|o| o == 3) || orders.filter(|&o| o == 2).count() >= 2
            })
            .collect()
    }

    fn bonded(&self, a: usize, b: usize) -> bool {
        self.bonds.iter().any(|&(x, y, _)| (x, y) == (a, b) || (x, y) == (b, a))
    }

    /// Neighbours of every atom with the bond order, in bond order of addition.
    fn adjacency(&self) -> Vec<Vec<(usize, u8)>> {
        let mut adj = vec![Vec::new(); self.atoms.len()];
        for &(a, b, o) in &self.bonds {
            adj[a].push((b, o));
            adj[b].push((a, o));
        }
        adj
    }

    /// The atoms of a shortest path from `a` to `b` (both included), if connected.
    fn path(&self, a: usize, b: usize) -> Option<Vec<usize>> {
        let adj = self.adjacency();
        let mut prev = vec![usize::MAX; self.atoms.len()];
        prev[a] = a;
        let mut queue = VecDeque::from([a]);
        while let Some(u) = queue.pop_front() {
            if u == b {
                let mut path = vec![b];
                let mut v = b;
                while v != a {
                    v = prev[v];
                    path.push(v);
                }
                return Some(path);
            }
            for &(v, _) in &adj[u] {
                if prev[v] == usize::MAX {
                    prev[v] = u;
                    queue.push_back(v);
                }
            }
        }
        None
    }

    /// The graph as a SMILES string (Kekulé form, implicit hydrogens): a depth-first walk from
    /// atom 0, ring closures numbered as they open.
    pub fn smiles(&self) -> String {
        let adj = self.adjacency();
        let n = self.atoms.len();
        // Depth-first order and tree parents; the other bonds close rings.
        let mut order = Vec::with_capacity(n);
        let mut parent = vec![usize::MAX; n];
        let mut seen = vec![false; n];
        let mut stack = vec![(0usize, usize::MAX)];
        while let Some((u, p)) = stack.pop() {
            if seen[u] {
                continue;
            }
            seen[u] = true;
            parent[u] = p;
            order.push(u);
            for &(v, _) in adj[u].iter().rev() {
                if !seen[v] {
                    stack.push((v, u));
                }
            }
        }
        let rank: Vec<usize> = {
            let mut r = vec![0; n];
            for (i, &u) in order.iter().enumerate() {
                r[u] = i;
            }
            r
        };
        let mut writer = SmilesWriter {
            atoms: &self.atoms,
            adj,
            parent,
            rank,
            digit_of: std::collections::HashMap::new(),
            free_digits: (1..=9).rev().collect(),
            out: String::new(),
        };
        writer.write(0);
        writer.out
    }
}

/// Writes a SMILES string along a depth-first tree of a [`Graph`].
struct SmilesWriter<'a> {
    atoms: &'a [usize],
    adj: Vec<Vec<(usize, u8)>>,
    /// Tree parent of each atom (`usize::MAX` for the root).
    parent: Vec<usize>,
    /// Position of each atom in the depth-first order.
    rank: Vec<usize>,
    /// Ring-closure digits open, by bond: opened at the earlier atom, closed at the later one.
    digit_of: std::collections::HashMap<(usize, usize), u8>,
    free_digits: Vec<u8>,
    out: String,
}

impl SmilesWriter<'_> {
    fn bond(order: u8) -> &'static str {
        match order {
            2 => "=",
            3 => "#",
            _ => "",
        }
    }

    /// Writes atom `u`, its ring closures, then its subtrees (all but the last in parentheses).
    fn write(&mut self, u: usize) {
        self.out.push_str(ELEMENTS[self.atoms[u]].0);
        let (parent, rank) = (&self.parent, &self.rank);
        let mut rings: Vec<(usize, u8)> =
            self.adj[u].iter().copied().filter(|&(v, _)| parent[v] != u && parent[u] != v).collect();
        rings.sort_by_key(|&(v, _)| rank[v]);
        let mut kids: Vec<(usize, u8)> = self.adj[u].iter().copied().filter(|&(v, _)| parent[v] == u).collect();
        kids.sort_by_key(|&(v, _)| rank[v]);
        for (v, o) in rings {
            let key = (u.min(v), u.max(v));
            if self.rank[v] < self.rank[u] {
                let d = self.digit_of.remove(&key).expect("ring opened at the earlier atom");
                self.out.push_str(Self::bond(o));
                self.out.push((b'0' + d) as char);
                self.free_digits.push(d);
            } else {
                let d = self.free_digits.pop().expect("at most 9 open rings");
                self.digit_of.insert(key, d);
                self.out.push((b'0' + d) as char);
            }
        }
        let last = kids.len().saturating_sub(1);
        for (i, (v, o)) in kids.into_iter().enumerate() {
            if i < last {
                self.out.push('(');
            }
            self.out.push_str(Self::bond(o));
            self.write(v);
            if i < last {
                self.out.push(')');
            }
        }
    }
}

/// Draws an index by relative weights.
fn pick(rng: &mut ChaCha8Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Whether a bond between elements `a` and `b` is allowed: fluorine only on carbon, no O–O.
fn allowed(a: usize, b: usize) -> bool {
    const O: usize = 2;
    const F: usize = 3;
    if a == F || b == F {
        return a == 0 || b == 0;
    }
    !(a == O && b == O)
}

/// One random molecule of at most [`MAX_HEAVY_ATOMS`] heavy atoms: a tree grown atom by atom
/// (single, double or triple bonds within the valences), then up to two ring closures making
/// rings of 3 to 7 atoms (none through a linear atom: a triple bond or an allene's centre).
pub fn random_molecule(rng: &mut ChaCha8Rng) -> Graph {
    let n = 1 + pick(rng, &SIZE_WEIGHTS);
    let mut g = Graph { atoms: vec![pick(rng, &ELEMENT_WEIGHTS[..3])], bonds: Vec::new() };
    while g.atoms.len() < n {
        let free = g.free();
        let open: Vec<usize> = (0..g.atoms.len()).filter(|&i| free[i] > 0).collect();
        if open.is_empty() {
            break;
        }
        let p = open[rng.random_range(0..open.len())];
        let e = pick(rng, &ELEMENT_WEIGHTS);
        if !allowed(g.atoms[p], e) {
            continue;
        }
        let max = free[p].min(ELEMENTS[e].1).min(3);
        let order = 1 + pick(rng, &[80, 15, 5][..max as usize]) as u8;
        g.atoms.push(e);
        g.bonds.push((p, g.atoms.len() - 1, order));
    }
    let rings = pick(rng, &[50, 35, 15]);
    for _ in 0..rings {
        let free = g.free();
        let linear = g.linear();
        let mut pairs = Vec::new();
        for a in 0..g.atoms.len() {
            for b in a + 1..g.atoms.len() {
                if free[a] == 0 || free[b] == 0 || g.bonded(a, b) || !allowed(g.atoms[a], g.atoms[b]) {
                    continue;
                }
                if let Some(path) = g.path(a, b)
                    && (3..=7).contains(&path.len())
                    && !path.iter().any(|&v| linear[v])
                {
                    pairs.push((a, b, path.len()));
                }
            }
        }
        if pairs.is_empty() {
            break;
        }
        let (a, b, size) = pairs[rng.random_range(0..pairs.len())];
        let double = size >= 5
            && free[a] >= 2
            && free[b] >= 2
            && !g.has_double(a)
            && !g.has_double(b)
            && rng.random_range(0..100) < 15;
        g.bonds.push((a, b, if double { 2 } else { 1 }));
    }
    g
}

/// `count` random SMILES from `seed` (duplicates possible; canonicalise to remove them).
pub fn random_smiles(seed: u64, count: usize) -> Vec<String> {
    random_smiles_from(&mut ChaCha8Rng::seed_from_u64(seed), count)
}

fn random_smiles_from(rng: &mut ChaCha8Rng, count: usize) -> Vec<String> {
    (0..count).map(|_| random_molecule(rng).smiles()).collect()
}

/// The seed of the generated search space: the same space for every run (`app.seed` only
/// chooses which molecules are computed first).
pub const GENERATION_SEED: u64 = 9;

/// The most rounds of generation before giving up on reaching the size asked for.
const MAX_ROUNDS: usize = 50;

/// Generates `size` distinct molecules: random graphs ([`random_molecule`]) in rounds, each
/// round's SMILES canonicalised by Open Babel in one batch ([`crate::apps::chem::canonical`]); the first `size`
/// distinct canonical SMILES in the order drawn. Deterministic.
pub fn generate(size: usize) -> Result<Vec<String>, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(GENERATION_SEED);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(size);
    for _ in 0..MAX_ROUNDS {
        if out.len() >= size {
            break;
        }
        let want = (size - out.len()) * 5 / 4 + 64;
        let drawn = random_smiles_from(&mut rng, want);
        for s in crate::apps::chem::canonical(&drawn).map_err(|e| e.to_string())?.into_iter().flatten() {
            if out.len() < size && seen.insert(s.clone()) {
                out.push(s);
            }
        }
    }
    if out.len() < size {
        return Err(format!("generated only {} distinct molecules of the {} asked for", out.len(), size));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(atoms: &[usize], bonds: &[(usize, usize, u8)]) -> Graph {
        Graph { atoms: atoms.to_vec(), bonds: bonds.to_vec() }
    }

    #[test]
    fn smiles_of_known_graphs() {
        assert_eq!(g(&[0], &[]).smiles(), "C");
        assert_eq!(g(&[0, 2], &[(0, 1, 2)]).smiles(), "C=O");
        // Isobutane-like branch, then a ring: cyclopropane with a fluorine.
        assert_eq!(g(&[0, 0, 0, 0], &[(0, 1, 1), (0, 2, 1), (0, 3, 1)]).smiles(), "C(C)(C)C");
        assert_eq!(g(&[0, 0, 0, 3], &[(0, 1, 1), (1, 2, 1), (2, 0, 1), (2, 3, 1)]).smiles(), "C1CC1F");
        // Benzene in Kekulé form.
        let ring: Vec<(usize, usize, u8)> = (0..6).map(|i| (i, (i + 1) % 6, if i % 2 == 0 { 2 } else { 1 })).collect();
        assert_eq!(g(&[0; 6], &ring).smiles(), "C1=CC=CC=C1");
    }

    #[test]
    fn random_molecules_respect_valences_and_rules() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut with_rings = 0;
        for _ in 0..5000 {
            let m = random_molecule(&mut rng);
            assert!((1..=MAX_HEAVY_ATOMS).contains(&m.atoms.len()));
            for (u, &e) in m.used().iter().zip(&m.atoms) {
                assert!(*u <= ELEMENTS[e].1, "{:?}", m);
            }
            assert!(m.bonds.iter().all(|&(a, b, _)| allowed(m.atoms[a], m.atoms[b])), "{:?}", m);
            assert!(m.path(0, m.atoms.len() - 1).is_some(), "connected: {:?}", m);
            with_rings += (m.bonds.len() >= m.atoms.len()) as usize;
            let linear = m.linear();
            for (i, &(a, b, _)) in m.bonds.iter().enumerate() {
                // A bond in a ring: without it, its atoms are still connected.
                let rest = Graph { atoms: m.atoms.clone(), bonds: [&m.bonds[..i], &m.bonds[i + 1..]].concat() };
                if let Some(path) = rest.path(a, b) {
                    assert!(path.len() > 7 || !path.iter().any(|&v| linear[v]), "linear atom in a small ring: {:?}", m);
                }
            }
            let s = m.smiles();
            assert_eq!(s.chars().filter(|c| c.is_ascii_uppercase()).count(), m.atoms.len(), "{}", s);
        }
        assert!(with_rings > 1000, "rings are included: {}", with_rings);
    }

    #[test]
    fn a_generated_space_is_distinct_canonical_and_repeatable() {
        let a = generate(300).unwrap();
        assert_eq!(a.len(), 300);
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 300);
        let again = crate::apps::chem::canonical(&a).unwrap();
        assert_eq!(again.into_iter().flatten().collect::<Vec<_>>(), a, "already canonical, all readable");
        assert_eq!(generate(300).unwrap(), a);
        assert_eq!(generate(100).unwrap(), a[..100], "a smaller space is a prefix");
        assert!(a.iter().any(|s| s.contains('1')) && a.iter().any(|s| s.contains('N') || s.contains('n')));
        assert!(
            a.iter().all(|s| s.chars().filter(|&c| c.is_ascii_alphabetic() && c != 'H').count() <= MAX_HEAVY_ATOMS)
        );
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(random_smiles(0, 200), random_smiles(0, 200));
        assert_ne!(random_smiles(0, 200), random_smiles(1, 200));
    }

    #[test]
    fn datasets_read_tables_and_smiles_files() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("qm9.tsv");
        std::fs::write(&tsv, "index\tsmiles\tinchi\n0\tC\tx\n1\tCO\ty\n2\tC\tz\n").unwrap();
        assert_eq!(read_dataset(&tsv).unwrap(), ["C", "CO"]);
        let smi = dir.path().join("x.smi");
        std::fs::write(&smi, "# comment\nc1ccccc1 benzene\n\nNc1ccccc1\n").unwrap();
        assert_eq!(read_dataset(&smi).unwrap(), ["c1ccccc1", "Nc1ccccc1"]);
        std::fs::write(&smi, "\n").unwrap();
        assert!(read_dataset(&smi).unwrap_err().contains("holds no molecules"));
        std::fs::write(&tsv, "a smiles\n1\n").unwrap();
        assert!(read_dataset(&tsv).unwrap_err().contains("row 2 has no column 2"));
    }
}
