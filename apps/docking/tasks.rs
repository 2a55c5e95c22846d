//! The five tasks that dock one molecule, each depending on the previous one and all working in
//! the molecule's own directory `RUN_DIR/tasks/NAME/` (the reference's chain, §5.2, with Open
//! Babel in place of RDKit and MGLTools, and Rust in place of VMD).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::app::TaskCommand;
use crate::apps::chem::obabel_task;
use crate::task::{ErrorKind, FilePath, Task, TaskError};

/// How Open Babel builds the 3-D structure (`--gen3d med`: rule-based build, force-field
/// cleanup, one rotor search). Open Babel 3.1.1 (Debian 12) writes every atom at the origin with
/// `fast` and `fastest`, so `med` is the fastest setting that works; the slower ones search more
/// conformers, which buys little as vina searches the torsions itself.
pub const GEN3D_SPEED: &str = "med";

/// `smi_to_pdb(smiles, dir)`: a 3-D structure with hydrogens, `RUN_DIR/tasks/DIR/in.pdb`, by
/// `obabel -:SMILES -h --gen3d med -opdb -O in.pdb` in that directory.
pub struct SmiToPdb;
impl Task for SmiToPdb {
    const NAME: &'static str = "smi_to_pdb";
    type Args = (String, String);
    type Output = FilePath;
    fn run((smiles, dir): Self::Args) -> Result<FilePath, TaskError> {
        let cmd = obabel_task()
            .arg(format!("-:{}", smiles))
            .args(["-h", "--gen3d", GEN3D_SPEED, "-opdb", "-O", "in.pdb"])
            .dir_name(dir);
        let shown = cmd.display();
        let out = cmd.run()?;
        let pdb = absolute(&out.dir)?.join("in.pdb");
        check_structure(&pdb, &shown, &out.stderr, true)?;
        Ok(FilePath(pdb))
    }
}

/// `set_element(in.pdb)`: `coords.pdb` beside it, with every atom's element symbol in columns
/// 77-78 (what the reference's VMD script `set_element.tcl` does).
pub struct SetElement;
impl Task for SetElement {
    const NAME: &'static str = "set_element";
    type Args = (FilePath,);
    type Output = FilePath;
    fn run((pdb,): Self::Args) -> Result<FilePath, TaskError> {
        let text = std::fs::read_to_string(pdb.path())
            .map_err(|e| TaskError::new(ErrorKind::Io, format!("cannot read {}: {}", pdb.display(), e)))?;
        let out = sibling(pdb.path(), "coords.pdb");
        std::fs::write(&out, set_elements(&text).map_err(|e| TaskError::exception("PdbError", e))?)
            .map_err(|e| TaskError::new(ErrorKind::Io, format!("cannot write {}: {}", out.display(), e)))?;
        Ok(FilePath(out))
    }
}

/// `pdb_to_pdbqt(coords.pdb)`: the ligand as `coords.pdbqt` beside it (atom types, torsion tree,
/// non-polar hydrogens merged, as MGLTools' `prepare_ligand4.py -U nphs_lps_waters`), by
/// `obabel coords.pdb -opdbqt -O coords.pdbqt`.
pub struct PdbToPdbqt;
impl Task for PdbToPdbqt {
    const NAME: &'static str = "pdb_to_pdbqt";
    type Args = (FilePath,);
    type Output = FilePath;
    fn run((pdb,): Self::Args) -> Result<FilePath, TaskError> {
        let dir = parent(pdb.path());
        let cmd = obabel_task().arg(pdb.path()).args(["-opdbqt", "-O", "coords.pdbqt"]);
        let shown = cmd.display();
        let out = cmd.run_in(&dir)?;
        let pdbqt = dir.join("coords.pdbqt");
        check_structure(&pdbqt, &shown, &out.stderr, false)?;
        Ok(FilePath(pdbqt))
    }
}

/// What vina is asked to do besides the receptor and the ligand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VinaSettings {
    /// Centre of the search box (Å).
    pub center: [f64; 3],
    /// Edges of the search box (Å).
    pub size: [f64; 3],
    /// Vina's search effort.
    pub exhaustiveness: u64,
    /// Poses vina writes at most.
    pub num_modes: u64,
    /// Poses more than this above the best one (kcal/mol) are dropped.
    pub energy_range: f64,
}
crate::task_arg!(VinaSettings);

/// `make_autodock_config(receptor, coords.pdbqt, settings)`: vina's `config.txt` beside the
/// ligand, its poses going to `out.pdbqt` there.
pub struct MakeAutodockConfig;
impl Task for MakeAutodockConfig {
    const NAME: &'static str = "make_autodock_config";
    type Args = (FilePath, FilePath, VinaSettings);
    type Output = FilePath;
    fn run((receptor, ligand, s): Self::Args) -> Result<FilePath, TaskError> {
        let config = sibling(ligand.path(), "config.txt");
        let out = sibling(ligand.path(), "out.pdbqt");
        let text = format!(
            "receptor = {}\nligand = {}\ncenter_x = {}\ncenter_y = {}\ncenter_z = {}\nsize_x = {}\nsize_y = {}\nsize_z = {}\n\
             exhaustiveness = {}\nnum_modes = {}\nenergy_range = {}\nout = {}\n",
            receptor.display(),
            ligand.display(),
            s.center[0],
            s.center[1],
            s.center[2],
            s.size[0],
            s.size[1],
            s.size[2],
            s.exhaustiveness,
            s.num_modes,
            s.energy_range,
            out.display()
        );
        std::fs::write(&config, text)
            .map_err(|e| TaskError::new(ErrorKind::Io, format!("cannot write {}: {}", config.display(), e)))?;
        Ok(FilePath(config))
    }
}

/// `autodock_vina(config.txt, smiles, cpu, seed)`: the best affinity (kcal/mol, lower binds
/// better) of `vina --config config.txt --cpu CPU --seed SEED`, run beside the config.
pub struct AutodockVina;
impl Task for AutodockVina {
    const NAME: &'static str = "autodock_vina";
    type Args = (FilePath, String, u64, u64);
    type Output = f64;
    fn run((config, _smiles, cpu, seed): Self::Args) -> Result<f64, TaskError> {
        let dir = parent(config.path());
        let cmd = TaskCommand::new("vina").arg("--config").arg(config.path()).args([
            "--cpu",
            &cpu.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
        let shown = cmd.display();
        let out = cmd.run_in(&dir)?;
        let stdout = std::fs::read_to_string(&out.stdout).unwrap_or_default();
        let poses = dir.join("out.pdbqt");
        best_affinity(&stdout)
            .or_else(|| std::fs::read_to_string(&poses).ok().and_then(|t| best_affinity_of_poses(&t)))
            .ok_or_else(|| {
                TaskError::exception(
                    "ParseError",
                    format!(
                        "`{}` printed no table of affinities (no `-----+` line followed by `1 <affinity> ...` in {}) \
                         and {} holds no `REMARK VINA RESULT:` line",
                        shown,
                        out.stdout.display(),
                        poses.display()
                    ),
                )
            })
    }
}

/// The best affinity in vina's stdout: the first row (`1  -5.81  0  0`) of the table that
/// follows the `-----+------------+...` line.
pub fn best_affinity(stdout: &str) -> Option<f64> {
    let mut lines = stdout.lines().skip_while(|l| !l.trim_start().starts_with("-----+"));
    lines.next()?;
    let row = lines.next()?;
    let mut fields = row.split_whitespace();
    (fields.next()? == "1").then_some(())?;
    fields.next()?.parse().ok().filter(|a: &f64| a.is_finite())
}

/// The best affinity in vina's output poses: the first `REMARK VINA RESULT:` line (the best pose
/// comes first).
pub fn best_affinity_of_poses(pdbqt: &str) -> Option<f64> {
    let rest = pdbqt.lines().find_map(|l| l.trim_start().strip_prefix("REMARK VINA RESULT:"))?;
    rest.split_whitespace().next()?.parse().ok().filter(|a: &f64| a.is_finite())
}

/// Every element symbol, for [`set_elements`].
const ELEMENTS: &[&str] = &[
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",
    "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce",
    "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir",
    "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc",
    "Lv", "Ts", "Og",
];

/// The element symbol spelt `s` in any case (`CL`, `cl` → `Cl`), if it is one.
fn element(s: &str) -> Option<&'static str> {
    ELEMENTS.iter().find(|e| e.eq_ignore_ascii_case(s)).copied()
}

/// The element of a PDB atom: columns 77-78 if they hold one, else guessed from the atom name
/// (columns 13-16): a name that starts in column 13 with two letters naming an element (`CL1`,
/// `BR`, `FE`) is that element, otherwise the first letter is (` C12`, ` HN1`).
fn atom_element(line: &str) -> Option<&'static str> {
    if let Some(e) = line.get(76..78).map(str::trim).filter(|e| !e.is_empty()).and_then(element) {
        return Some(e);
    }
    let name = line.get(12..16).unwrap_or_else(|| line.get(12..).unwrap_or(""));
    let letters: String = name.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    if !name.starts_with(' ')
        && letters.len() >= 2
        && let Some(e) = element(&letters[..2])
    {
        return Some(e);
    }
    letters.get(..1).and_then(element)
}

/// A PDB text with the element symbol of every `ATOM`/`HETATM` record written right-justified
/// into columns 77-78 (see [`atom_element`]); other records are kept as they are. The reference's
/// VMD script takes the first letter of the atom name, which turns chlorine (`CL1`) into carbon
/// and bromine into boron; this keeps them.
pub fn set_elements(pdb: &str) -> Result<String, String> {
    let mut out = String::with_capacity(pdb.len() + pdb.len() / 8);
    let mut atoms = 0;
    for (i, line) in pdb.lines().enumerate() {
        if !(line.starts_with("ATOM  ") || line.starts_with("HETATM")) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let e = atom_element(line).ok_or_else(|| format!("line {}: no element for atom {:?}", i + 1, line))?;
        let mut padded: String = line.chars().take(76).collect();
        while padded.len() < 76 {
            padded.push(' ');
        }
        let tail: String = line.chars().skip(78).collect();
        out.push_str(&format!("{}{:>2}{}\n", padded, e.to_ascii_uppercase(), tail));
        atoms += 1;
    }
    if atoms == 0 { Err("no ATOM or HETATM records".into()) } else { Ok(out) }
}

/// Checks that a program wrote a structure: atoms, and (for a freshly embedded one, `embedded`)
/// not all at the origin. Open Babel exits with status 0 when it converts nothing (a SMILES it
/// cannot read) and, in 3.1.1, may embed every atom at (0, 0, 0) (openbabel issue 2335); both
/// fail the task as the program's failure, quoting its stderr.
fn check_structure(path: &Path, command: &str, stderr: &Path, embedded: bool) -> Result<(), TaskError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let coords: Vec<[f64; 3]> = text
        .lines()
        .filter(|l| l.starts_with("ATOM  ") || l.starts_with("HETATM"))
        .map(|l| [30..38, 38..46, 46..54].map(|r| l.get(r).and_then(|s| s.trim().parse().ok()).unwrap_or(0.0)))
        .collect();
    let problem = if coords.is_empty() {
        "wrote no atoms"
    } else if embedded && coords.iter().all(|c| c.iter().all(|x| *x == 0.0)) {
        "placed every atom at the origin (3-D embedding failed)"
    } else {
        return Ok(());
    };
    let said = std::fs::read_to_string(stderr).unwrap_or_default();
    let said: Vec<&str> = said.trim_end().lines().collect();
    let tail = said[said.len().saturating_sub(crate::app::STDERR_LINES)..].join("\n");
    Err(TaskError::new(
        ErrorKind::ProgramFailed,
        format!(
            "`{}` {} in {}; last lines of its stderr ({}):\n{}",
            command,
            problem,
            path.display(),
            stderr.display(),
            tail
        ),
    ))
}

/// `name` in the directory of `path`.
fn sibling(path: &Path, name: &str) -> PathBuf {
    parent(path).join(name)
}

/// The directory of `path`.
fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `dir` as an absolute path (programs run inside it, so the paths handed on must not be
/// relative to the launch directory).
fn absolute(dir: &Path) -> Result<PathBuf, TaskError> {
    std::path::absolute(dir).map_err(|e| TaskError::new(ErrorKind::Io, format!("{}: {}", dir.display(), e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_affinity_reads_the_first_row_after_the_rule() {
        let out = "Performing docking (random seed: 42) ...\n0%   10\n|----|----|\n****\n\n\
                   mode |   affinity | dist from best mode\n     | (kcal/mol) | rmsd l.b.| rmsd u.b.\n\
                   -----+------------+----------+----------\n   1       -6.083          0          0\n   \
                   2       -5.998      3.945      5.669\n";
        assert_eq!(best_affinity(out), Some(-6.083));
        // The reference's "third line from the end" would read -5.998 here, or garbage with a trailer.
        assert_eq!(best_affinity("Computing Vina grid ... done.\n"), None);
        assert_eq!(best_affinity("-----+----\n   2  -1.0  0 0\n"), None);
        assert_eq!(
            best_affinity_of_poses("MODEL 1\nREMARK VINA RESULT:    -8.393      0.000      0.000\n"),
            Some(-8.393)
        );
        assert_eq!(best_affinity_of_poses("MODEL 1\nREMARK nothing\n"), None);
    }

    #[test]
    fn set_elements_writes_columns_77_78_and_keeps_halogens() {
        let pdb = "COMPND    UNNAMED\n\
                   HETATM    1  C1  UNL     1       1.000   2.000   3.000  1.00  0.00\n\
                   HETATM    2 CL1  UNL     1       1.000   2.000   3.000  1.00  0.00\n\
                   ATOM      3  HN1 UNL     1       1.000   2.000   3.000  1.00  0.00           H  \n\
                   HETATM    4 Br   UNL     1       1.000   2.000   3.000\n\
                   HETATM    5  O   UNL     1       1.000   2.000   3.000  1.00  0.00          CL  \n\
                   CONECT    1    2\n";
        let out = set_elements(pdb).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let elements: Vec<&str> = lines[1..6].iter().map(|l| &l[76..78]).collect();
        assert_eq!(elements, [" C", "CL", " H", "BR", "CL"]);
        assert_eq!(lines[0], "COMPND    UNNAMED");
        assert_eq!(lines[6], "CONECT    1    2");
        assert!(lines[1..6].iter().all(|l| l.len() >= 78), "{:?}", lines);
        assert_eq!(&lines[3][78..], "  ", "columns 79-80 (charge) kept");
        assert_eq!(&lines[1][..66], &pdb.lines().nth(1).unwrap()[..66], "coordinates untouched");
        assert!(set_elements("COMPND\nEND\n").is_err());
    }
}
