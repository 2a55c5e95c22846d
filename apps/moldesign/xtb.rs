//! The quantum chemistry of `moldesign`: a vertical ionisation energy from Open Babel (3-D
//! start geometry) and xtb (GFN2-xTB relaxation, then the cation's energy at that geometry).

use std::path::Path;

use crate::app::TaskCommand;
use crate::apps::chem::obabel_task;
use crate::task::{ErrorKind, TaskError};

/// Hartree in electronvolts (CODATA 2018).
pub const HARTREE_EV: f64 = 27.211_386_245_988;

/// GFN2-xTB's empirical shift of ionisation potentials, in eV: what `xtb --vip` subtracts from
/// the ΔSCC energy difference (it prints `empirical IP shift (eV): 4.8455`).
pub const GFN2_IP_SHIFT_EV: f64 = 4.8455;

/// Element symbols by atomic number (1 = H … 118 = Og; GFN2-xTB is parametrised up to 86 = Rn,
/// and xtb fails on heavier atoms).
const SYMBOLS: [&str; 118] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",
    "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce",
    "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir",
    "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc",
    "Lv", "Ts", "Og",
];

/// An error of the task's own (not a program's exit status): `ValueError`, as the Python suite's.
fn value_error(message: String) -> TaskError {
    TaskError::exception("ValueError", message)
}

/// The number of electrons of the neutral molecule in an XYZ file (the sum of atomic numbers).
/// Elements are matched case-insensitively; any other symbol is an error naming it.
pub fn electrons(xyz: &str) -> Result<u32, String> {
    let mut lines = xyz.lines();
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| "no atom count on the first line".to_string())?;
    let atoms: Vec<&str> = lines.skip(1).filter(|l| !l.trim().is_empty()).take(count).collect();
    if atoms.len() != count {
        return Err(format!("{} atoms announced, {} found", count, atoms.len()));
    }
    atoms.iter().try_fold(0u32, |sum, line| {
        let symbol = line.split_whitespace().next().unwrap_or("");
        let z = SYMBOLS
            .iter()
            .position(|s| s.eq_ignore_ascii_case(symbol))
            .ok_or_else(|| format!("unknown element {:?}", symbol))?;
        Ok(sum + z as u32 + 1)
    })
}

/// The last `TOTAL ENERGY … Eh` of an xtb output, in hartree.
pub fn total_energy(stdout: &str) -> Option<f64> {
    stdout.lines().rev().find_map(|l| {
        let rest = l.split("TOTAL ENERGY").nth(1)?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse::<f64>().ok()?;
        (words.next() == Some("Eh")).then_some(value)
    })
}

/// Runs xtb in `dir` with OpenMP on one thread, checks that it terminated normally, and returns
/// the final total energy (hartree).
fn xtb(dir: &Path, args: &[&str]) -> Result<f64, TaskError> {
    let out = TaskCommand::new("xtb")
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("OMP_MAX_ACTIVE_LEVELS", "1")
        .env("OMP_STACKSIZE", "200M")
        .env("MKL_NUM_THREADS", "1")
        .run_in(dir)?;
    let stdout = std::fs::read_to_string(&out.stdout)?;
    let stderr = std::fs::read_to_string(&out.stderr)?;
    let shown = format!("`xtb {}` (in {})", args.join(" "), dir.display());
    if !stderr.contains("normal termination of xtb") && !stdout.contains("normal termination of xtb") {
        return Err(TaskError::new(
            ErrorKind::ProgramFailed,
            format!(
                "{} exited with status 0 but did not report normal termination; see {}",
                shown,
                out.stderr.display()
            ),
        ));
    }
    total_energy(&stdout).ok_or_else(|| {
        TaskError::new(
            ErrorKind::ProgramFailed,
            format!("{} printed no TOTAL ENERGY line; see {}", shown, out.stdout.display()),
        )
    })
}

/// The vertical ionisation energy of `smiles`, E(cation) − E(neutral) in eV, without any
/// empirical shift, computed in the task's own directory `dir`:
///
/// 1. `obabel -:SMILES --gen3d -oxyz -O in.xyz`: a 3-D start geometry;
/// 2. `xtb in.xyz --gfn 2 --opt --acc 0.05`: the neutral relaxed with GFN2-xTB (its energy);
/// 3. `xtb xtbopt.xyz --gfn 2 --sp --chrg 1 --uhf U --acc 0.05` in `dir/cation/`: the cation at
///    the relaxed geometry (U = 1 for a closed-shell neutral: the cation is a doublet).
///
/// Every program runs on one OpenMP thread (see [`OBABEL_ENV`](crate::apps::chem::OBABEL_ENV)).
pub fn vertical_ionisation(smiles: &str, dir: &Path) -> Result<f64, TaskError> {
    obabel_task().arg(format!("-:{}", smiles)).args(["--gen3d", "-oxyz", "-O", "in.xyz"]).run_in(dir)?;
    let xyz = std::fs::read_to_string(dir.join("in.xyz")).unwrap_or_default();
    let nel = electrons(&xyz).map_err(|e| {
        let said = std::fs::read_to_string(dir.join("obabel.stderr")).unwrap_or_default();
        value_error(format!(
            "Parse failure for {}: {} in {} (Open Babel said: {})",
            smiles,
            e,
            dir.join("in.xyz").display(),
            said.trim()
        ))
    })?;
    let (uhf_neutral, uhf_cation) = ((nel % 2).to_string(), ((nel - 1) % 2).to_string());
    let neutral = xtb(dir, &["in.xyz", "--gfn", "2", "--opt", "--acc", "0.05", "--chrg", "0", "--uhf", &uhf_neutral])?;
    if dir.join("NOT_CONVERGED").exists() || !dir.join("xtbopt.xyz").exists() {
        return Err(TaskError::new(
            ErrorKind::ProgramFailed,
            format!("xtb did not converge the geometry of {} (in {})", smiles, dir.display()),
        ));
    }
    let cation_dir = dir.join("cation");
    std::fs::create_dir_all(&cation_dir)?;
    std::fs::copy(dir.join("xtbopt.xyz"), cation_dir.join("neutral.xyz"))?;
    let cation =
        xtb(&cation_dir, &["neutral.xyz", "--gfn", "2", "--sp", "--acc", "0.05", "--chrg", "1", "--uhf", &uhf_cation])?;
    Ok((cation - neutral) * HARTREE_EV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energies_are_parsed_from_the_last_total_energy_line() {
        let out =
            "  | TOTAL ENERGY   -1.0 Eh |\n junk\n          | TOTAL ENERGY              -15.879640655898 Eh   |\n";
        assert_eq!(total_energy(out), Some(-15.879640655898));
        assert_eq!(total_energy(":: total energy -3.0 Eh\n"), None);
        assert_eq!(total_energy("TOTAL ENERGY not-a-number Eh"), None);
    }

    #[test]
    fn electrons_count_atomic_numbers() {
        let water = "3\ncomment\nO 0 0 0\nH 0 0 1\nh 0 1 0\n";
        assert_eq!(electrons(water), Ok(10));
        assert!(electrons("2\n\nC 0 0 0\n").unwrap_err().contains("2 atoms announced, 1 found"));
        assert_eq!(electrons("1\n\nU 0 0 0\n"), Ok(92));
        assert!(electrons("1\n\nXx 0 0 0\n").unwrap_err().contains("\"Xx\""));
        assert!(electrons("").is_err());
        assert!(electrons("0\n\n").is_err());
    }
}
