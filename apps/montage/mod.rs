//! `montage`: a background-matched astronomical mosaic built with the Montage toolkit, as the
//! Python suite's montage app: `mproject` per image, `mimgtbl`, `moverlaps`, `mdiff` per overlap,
//! `bgexec_prep` (mFitExec then mBgModel), `mbackground` per image and `madd` (2P + D + 4 tasks),
//! after `mImgtbl` and `mMakeHdr` in the client; then a PNG preview with `mViewer`.
//!
//! The input is a directory of FITS images (never written to), or by default a synthetic sky
//! ([`sky`]) written into the run directory. Montage's tables are read by column name
//! ([`ipac`]), not with the Python suite's pandas hacks. See `apps/montage/README.md`.

use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use crate::app::{App, AppConfig, AppPlugin, Footprint, TaskCommand, require_programs};
use crate::app_info;
use crate::engine::{Engine, TaskFuture};
use crate::options::Validate;
use crate::task::{ErrorKind, FilePath, Registry, Task, TaskError};

pub mod ipac;
pub mod sky;

use ipac::{Status, Table};

/// How to install the Montage programs.
const INSTALL: &str = "apt-get install montage";

/// Every Montage program the app runs, in the client or in its tasks.
const PROGRAMS: &[&str] = &[
    "mImgtbl",
    "mMakeHdr",
    "mProject",
    "mOverlaps",
    "mDiff",
    "mFitExec",
    "mBgModel",
    "mBackground",
    "mAdd",
    "mViewer",
];

/// File and directory names the app writes in its output directory (the image table and
/// header options must not take them).
const OUTPUT_NAMES: &[&str] =
    &["images.tbl", "diffs.tbl", "fits.tbl", "corrections.tbl", "projections", "diffs", "corrections", MOSAIC, PREVIEW];

/// The mosaic's file name in the output directory (the Python suite's name).
const MOSAIC: &str = "m17.fits";
/// The preview's file name in the output directory.
const PREVIEW: &str = "m17.png";
/// Where the synthetic sky goes in the run directory.
const SKY_DIR: &str = "sky";

crate::options! {
    /// Options of the `montage` app.
    pub(crate) struct MontageOptions {
        /// Directory of FITS images (the *.fits directly inside it; never written to); none = a synthetic sky written into RUN/sky.
        img_folder: Option<PathBuf> = None,
        /// Table of the input images, written by mImgtbl in output-dir.
        img_tbl: String = "Kimages.tbl".into(),
        /// Header of the mosaic, written by mMakeHdr in output-dir.
        img_hdr: String = "Kimages.hdr".into(),
        /// Directory of the outputs, relative to the run directory.
        output_dir: String = "data".into(),
        /// Write a PNG preview of the mosaic (m17.png, with mViewer) after the run.
        #[skip_default] preview: bool = true,
        /// Synthetic sky: images per side (grid × grid images).
        #[skip_default] grid: u64 = 2,
        /// Synthetic sky: pixels per image side.
        #[skip_default] image_size: u64 = 128,
        /// Synthetic sky: fraction of an image's width shared with its neighbour (0.1 to 0.9).
        #[skip_default] overlap: f64 = 0.5,
        /// Synthetic sky: stars in the whole field.
        #[skip_default] stars: u64 = 200,
        /// Synthetic sky: the images' background offsets are spread evenly over ±this, in a random order.
        #[skip_default] background_offset: f64 = 50.0,
        /// Synthetic sky: largest background slope per pixel along each axis.
        #[skip_default] background_slope: f64 = 0.02,
        /// Synthetic sky: standard deviation of the pixel noise.
        #[skip_default] noise: f64 = 1.0,
        /// Synthetic sky: seed of the stars, offsets, slopes and noise.
        #[skip_default] seed: u64 = 0,
    }
}

/// A plain file name: not empty, no `/`, not `.` or `..`.
fn check_file_name(key: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(format!("app.{} must be a plain file name (no '/'), got {:?}", key, name));
    }
    if OUTPUT_NAMES.contains(&name) {
        return Err(format!(
            "app.{} = {:?} is a file the app writes itself in app.output_dir; choose another name (not {})",
            key,
            name,
            OUTPUT_NAMES.join(", ")
        ));
    }
    Ok(())
}

impl Validate for MontageOptions {
    fn validate(&self) -> Result<(), String> {
        let out = Path::new(&self.output_dir);
        if self.output_dir.is_empty()
            || self.output_dir.contains('\0')
            || !out.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "app.output_dir must be a relative path inside the run directory (no '..', not absolute), got {:?}",
                self.output_dir
            ));
        }
        check_file_name("img_tbl", &self.img_tbl)?;
        check_file_name("img_hdr", &self.img_hdr)?;
        if self.img_tbl == self.img_hdr {
            return Err(format!("app.img_tbl and app.img_hdr are both {:?}; give them different names", self.img_tbl));
        }
        if self.img_folder.is_none() {
            if !(2..=16).contains(&self.grid) {
                return Err(format!(
                    "app.grid must be from 2 to 16 (images per side of the synthetic sky), got {}",
                    self.grid
                ));
            }
            if !(16..=4096).contains(&self.image_size) {
                return Err(format!("app.image_size must be from 16 to 4096 pixels, got {}", self.image_size));
            }
            if !(0.1..=0.9).contains(&self.overlap) {
                return Err(format!(
                    "app.overlap must be from 0.1 to 0.9 (a fraction of the image width), got {}",
                    self.overlap
                ));
            }
            for (key, v) in [
                ("background_offset", self.background_offset),
                ("background_slope", self.background_slope),
                ("noise", self.noise),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("app.{} must be a finite number ≥ 0, got {}", key, v));
                }
            }
        }
        Ok(())
    }
}

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: crate::plugin!(
        dyn AppConfig,
        MontageOptions,
        "montage",
        "background-matched astronomical mosaic with Montage (mProject, mDiff, mBgModel, mAdd)"
    ),
    register_tasks,
};

fn register_tasks(r: &mut Registry) {
    r.add::<MProject>()
        .add::<MImgtbl>()
        .add::<MOverlaps>()
        .add::<MDiff>()
        .add::<BgexecPrep>()
        .add::<MBackground>()
        .add::<MAdd>();
}

/// The `*.fits` files directly inside `dir`, sorted (the images the app projects).
fn fits_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "fits") && p.is_file())
        .collect();
    v.sort();
    Ok(v)
}

impl AppConfig for MontageOptions {
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        Ok(Box::new(MontageApp::new(self.clone(), run_dir)?))
    }

    /// The Montage programs, then a user's image folder: a directory with `*.fits` files.
    fn preflight(&self) -> Result<(), String> {
        let programs: Vec<(&str, &str)> = PROGRAMS.iter().map(|p| (*p, INSTALL)).collect();
        require_programs(&programs)?;
        let Some(dir) = &self.img_folder else { return Ok(()) };
        match std::fs::metadata(dir) {
            Err(e) => Err(format!("app.img_folder {}: {}", dir.display(), e)),
            Ok(m) if !m.is_dir() => Err(format!("app.img_folder {} is not a directory", dir.display())),
            Ok(_) => match fits_files(dir) {
                Ok(f) if f.is_empty() => Err(format!(
                    "app.img_folder {} holds no *.fits files (give a directory of FITS images, or leave it unset for a synthetic sky)",
                    dir.display()
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(format!("app.img_folder {}: {}", dir.display(), e)),
            },
        }
    }

    /// The output directory (and the synthetic sky's) in the run directory; one image in memory.
    fn footprint(&self) -> Footprint {
        let mut files = Vec::new();
        if self.img_folder.is_none() {
            files.push(("app.img_folder (none: the synthetic sky)".to_string(), SKY_DIR.to_string()));
        }
        if let Some(Component::Normal(first)) = Path::new(&self.output_dir).components().next() {
            files.push(("app.output_dir".to_string(), first.to_string_lossy().into_owned()));
        }
        let side = if self.img_folder.is_none() { self.image_size } else { 0 };
        Footprint {
            memory_bytes: side.saturating_mul(side).saturating_mul(4),
            memory_for: format!("one synthetic image, app.image_size² = {}² float32 pixels", side),
            files,
        }
    }
}

/// A failed Montage program: the task's error, and Montage's status line if it printed one.
#[derive(Debug)]
struct MontageFailure {
    error: TaskError,
    status: Option<Box<Status>>,
}

impl From<MontageFailure> for TaskError {
    fn from(f: MontageFailure) -> TaskError {
        f.error
    }
}

impl std::fmt::Display for MontageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// Runs a Montage program in `dir` and returns its status line. A failure is a
/// [`ErrorKind::ProgramFailed`] naming the command, its exit status, the end of its stderr and
/// Montage's own message (which Montage prints on stdout, as `[struct stat="ERROR", msg=...]`);
/// a status of ERROR is a failure whatever the exit status.
fn montage(cmd: TaskCommand, program: &str, dir: &Path) -> Result<Status, MontageFailure> {
    let stdout = dir.join(format!("{}.stdout", program));
    let shown = cmd.display();
    let result = cmd.run_in(dir);
    let status = std::fs::read_to_string(&stdout).ok().as_deref().and_then(Status::find);
    let error = match (result, &status) {
        (Ok(_), Some(s)) if s.stat != "ERROR" => return Ok(s.clone()),
        (Err(mut e), Some(s)) => {
            e.message.push_str(&format!("; its status line ({}): {}", stdout.display(), s.describe()));
            e
        }
        (Err(e), None) => e,
        (Ok(_), Some(s)) => TaskError::new(
            ErrorKind::ProgramFailed,
            format!("`{}` reported an error (in {}): {}", shown, dir.display(), s.describe()),
        ),
        (Ok(_), None) => TaskError::new(
            ErrorKind::ProgramFailed,
            format!("`{}` printed no [struct stat=...] status line in {}", shown, stdout.display()),
        ),
    };
    Err(MontageFailure { error, status: status.map(Box::new) })
}

/// Runs a Montage program in the current task's working directory, `RUN_DIR/tasks/TASK-ID/`.
fn montage_task<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Result<Status, MontageFailure> {
    let outside = || TaskError::new(ErrorKind::ProgramFailed, format!("{} run outside a task body", program));
    let context = crate::task::context().ok_or_else(|| MontageFailure { error: outside(), status: None })?;
    let dir = context.work_dir(None).map_err(|error| MontageFailure { error, status: None })?;
    montage(TaskCommand::new(program).args(args), program, &dir)
}

/// `mproject(input_path, template_path, output_path)`: `mProject IN OUT TEMPLATE`.
pub struct MProject;
impl Task for MProject {
    const NAME: &'static str = "mproject";
    type Args = (FilePath, FilePath, FilePath);
    type Output = FilePath;
    fn run((input, template, output): Self::Args) -> Result<FilePath, TaskError> {
        montage_task("mProject", &[input.as_os_str(), output.as_os_str(), template.as_os_str()])?;
        Ok(output)
    }
}

/// `mimgtbl(img_dir, tbl_path)`: `mImgtbl DIR TABLE`, with DIR relative to the task's working
/// directory: mImgtbl writes each file name (`fname`) as DIR joined with the name, and mAdd finds
/// the corrected images by joining `fname` to its `-p` directory, which needs bare names.
pub struct MImgtbl;
impl Task for MImgtbl {
    const NAME: &'static str = "mimgtbl";
    type Args = (FilePath, FilePath);
    type Output = FilePath;
    fn run((img_dir, tbl): Self::Args) -> Result<FilePath, TaskError> {
        let context = crate::task::context()
            .ok_or_else(|| TaskError::new(ErrorKind::ProgramFailed, "mImgtbl run outside a task body"))?;
        let dir = context.work_dir(None)?;
        let relative = relative_path(&img_dir, &dir);
        montage(TaskCommand::new("mImgtbl").arg(&relative).arg(tbl.path()), "mImgtbl", &dir)?;
        Ok(tbl)
    }
}

/// `path` relative to the directory `base` (both absolute), e.g. `../../data/projections`.
fn relative_path(path: &Path, base: &Path) -> PathBuf {
    let (p, b): (Vec<Component>, Vec<Component>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: PathBuf = b[common..].iter().map(|_| Component::ParentDir).collect();
    out.extend(&p[common..]);
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// `moverlaps(img_tbl, diffs_tbl)`: `mOverlaps IMAGES DIFFS`.
pub struct MOverlaps;
impl Task for MOverlaps {
    const NAME: &'static str = "moverlaps";
    type Args = (FilePath, FilePath);
    type Output = FilePath;
    fn run((img_tbl, diffs_tbl): Self::Args) -> Result<FilePath, TaskError> {
        montage_task("mOverlaps", &[img_tbl.as_os_str(), diffs_tbl.as_os_str()])?;
        Ok(diffs_tbl)
    }
}

/// What mDiff says of two images whose footprints touch (so mOverlaps lists them) but share no pixel.
const NO_COMMON_PIXELS: &str = "All pixels are blank.";

/// `mdiff(image_1, image_2, template, output_path)`: `mDiff IMG1 IMG2 OUT TEMPLATE`; None when the
/// two images share no pixel after all (mOverlaps lists pairs whose outlines merely touch).
pub struct MDiff;
impl Task for MDiff {
    const NAME: &'static str = "mdiff";
    type Args = (FilePath, FilePath, FilePath, FilePath);
    type Output = Option<FilePath>;
    fn run((image_1, image_2, template, output): Self::Args) -> Result<Option<FilePath>, TaskError> {
        match montage_task(
            "mDiff",
            &[image_1.as_os_str(), image_2.as_os_str(), output.as_os_str(), template.as_os_str()],
        ) {
            Ok(_) => Ok(Some(output)),
            Err(f) if f.status.as_ref().and_then(|s| s.get("msg")) == Some(NO_COMMON_PIXELS) => Ok(None),
            Err(f) => Err(f.into()),
        }
    }
}

/// `bgexec_prep(img_table, diffs_table, diff_dir, output_dir)`: `mFitExec` fits a plane to every
/// difference (`fits.tbl`), then `mBgModel` solves for each image's correction
/// (`corrections.tbl`, returned). Debian's Montage has no mDiffFit, so the differences are
/// `mdiff` tasks and the fits happen here.
pub struct BgexecPrep;
impl Task for BgexecPrep {
    const NAME: &'static str = "bgexec_prep";
    type Args = (FilePath, FilePath, FilePath, FilePath);
    type Output = FilePath;
    fn run((img_table, diffs_table, diff_dir, output_dir): Self::Args) -> Result<FilePath, TaskError> {
        let fits = output_dir.join("fits.tbl");
        let corrections = output_dir.join("corrections.tbl");
        montage_task("mFitExec", &[diffs_table.as_os_str(), fits.as_os_str(), diff_dir.as_os_str()])?;
        montage_task("mBgModel", &[img_table.as_os_str(), fits.as_os_str(), corrections.as_os_str()])?;
        Ok(corrections.into())
    }
}

/// `mbackground(in_image, out_image, a, b, c)`: `mBackground IN OUT A B C` subtracts the plane
/// `a·x + b·y + c`.
pub struct MBackground;
impl Task for MBackground {
    const NAME: &'static str = "mbackground";
    type Args = (FilePath, FilePath, f64, f64, f64);
    type Output = FilePath;
    fn run((input, output, a, b, c): Self::Args) -> Result<FilePath, TaskError> {
        // Full precision; mBackground reads a negative coefficient as a number, not an option.
        let [a, b, c] = [a, b, c].map(|v| std::ffi::OsString::from(format!("{:e}", v)));
        montage_task("mBackground", &[input.as_os_str(), output.as_os_str(), &a, &b, &c])?;
        Ok(output)
    }
}

/// `madd(images_tbl, template, output, corr_dir)`: `mAdd -p CORR_DIR IMAGES TEMPLATE OUT`.
pub struct MAdd;
impl Task for MAdd {
    const NAME: &'static str = "madd";
    type Args = (FilePath, FilePath, FilePath, FilePath);
    type Output = FilePath;
    fn run((images_tbl, template, output, corr_dir): Self::Args) -> Result<FilePath, TaskError> {
        montage_task(
            "mAdd",
            &["-p".as_ref(), corr_dir.as_os_str(), images_tbl.as_os_str(), template.as_os_str(), output.as_os_str()],
        )?;
        Ok(output)
    }
}

/// The app: inputs found or generated, the outputs' places.
struct MontageApp {
    opts: MontageOptions,
    /// The directory of input images (absolute).
    images: PathBuf,
    /// `RUN/<output_dir>` (absolute).
    out: PathBuf,
    /// The run directory (absolute).
    run_dir: PathBuf,
    /// The mosaic, once `madd` has made it.
    mosaic: Option<PathBuf>,
}

impl MontageApp {
    /// Finds the input images, or writes the synthetic sky into `RUN/sky`.
    fn new(opts: MontageOptions, run_dir: &Path) -> anyhow::Result<Self> {
        let run_dir = std::path::absolute(run_dir)?;
        let images = match &opts.img_folder {
            Some(dir) => std::path::absolute(dir)?,
            None => {
                let spec = sky::SkySpec {
                    grid: opts.grid,
                    image_size: opts.image_size,
                    overlap: opts.overlap,
                    stars: opts.stars,
                    background_offset: opts.background_offset,
                    background_slope: opts.background_slope,
                    noise: opts.noise,
                    seed: opts.seed,
                };
                let dir = run_dir.join(SKY_DIR);
                let t = Instant::now();
                let written = sky::write(&spec, &dir)?;
                app_info!(
                    "Generated a synthetic sky of {} images ({}x{} grid of {}x{} px, seed {}) in {} ({:.3}s)",
                    written.images.len(),
                    opts.grid,
                    opts.grid,
                    opts.image_size,
                    opts.image_size,
                    opts.seed,
                    dir.display(),
                    t.elapsed().as_secs_f64()
                );
                for (p, b) in written.images.iter().zip(&written.backgrounds) {
                    tracing::debug!(
                        "{}: background offset {:.3}, slope ({:.5}, {:.5}) per pixel",
                        p.display(),
                        b.offset,
                        b.slope_x,
                        b.slope_y
                    );
                }
                dir
            }
        };
        let out = run_dir.join(&opts.output_dir);
        Ok(MontageApp { opts, images, out, run_dir, mosaic: None })
    }

    /// Runs a Montage program in the client, in `RUN/tasks/PROGRAM/`; logs its status at DEBUG.
    fn client(&self, program: &str, args: &[&Path]) -> anyhow::Result<Status> {
        let dir = self.run_dir.join("tasks").join(program);
        let status =
            montage(TaskCommand::new(program).args(args), program, &dir).map_err(|e| anyhow::anyhow!("{}", e))?;
        tracing::debug!("{}: {}", program, status.describe());
        Ok(status)
    }
}

/// Waits for every future; returns the results that succeeded and, for those that failed, the
/// task's name, id and error.
fn gather<T>(futures: &[TaskFuture<T>]) -> (Vec<T>, Vec<String>)
where
    T: crate::task::Data,
{
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for f in futures {
        match f.result() {
            Ok(v) => ok.push(v),
            Err(e) => failed.push(format!("{} ({}): {}", f.name(), f.task_id(), e)),
        }
    }
    (ok, failed)
}

impl App for MontageApp {
    fn run(&mut self, engine: &Engine, _run_dir: &Path) -> anyhow::Result<()> {
        let out = self.out.clone();
        std::fs::create_dir_all(&out)?;
        let (img_tbl, img_hdr) = (out.join(&self.opts.img_tbl), out.join(&self.opts.img_hdr));
        let listed = self.client("mImgtbl", &[&self.images, &img_tbl])?;
        if listed.get("count") == Some("0") {
            anyhow::bail!(
                "no usable FITS image in {} (mImgtbl: {}; see {})",
                self.images.display(),
                listed.describe(),
                img_tbl.display()
            );
        }
        self.client("mMakeHdr", &[&img_tbl, &img_hdr])?;
        app_info!("Configured output directory ({})", out.display());
        let projections = out.join("projections");
        std::fs::create_dir_all(&projections)?;

        app_info!("Starting projections");
        let inputs = fits_files(&self.images)?;
        let projected: Vec<TaskFuture<FilePath>> = inputs
            .iter()
            .map(|input| {
                let name = format!("hdu0_{}", input.file_name().expect("a file").to_string_lossy());
                engine.submit::<MProject>((input.clone().into(), img_hdr.clone().into(), projections.join(name).into()))
            })
            .collect();
        let (done, failed) = gather(&projected);
        if done.is_empty() {
            anyhow::bail!("every projection failed ({} images); the first: {}", inputs.len(), failed[0]);
        }
        if !failed.is_empty() {
            tracing::warn!(
                "{} of {} projections failed; the mosaic goes on without them; the first: {}",
                failed.len(),
                inputs.len(),
                failed[0]
            );
        }
        app_info!("Projections completed");

        let images_tbl = engine.submit::<MImgtbl>((projections.clone().into(), out.join("images.tbl").into()));
        let diffs_tbl = engine.submit::<MOverlaps>(((&images_tbl).into(), out.join("diffs.tbl").into()));
        let diff_dir = out.join("diffs");
        std::fs::create_dir_all(&diff_dir)?;
        let diffs_path = diffs_tbl.result().map_err(|e| anyhow::anyhow!("moverlaps failed: {}", e))?;

        let overlaps = Table::read(&diffs_path).map_err(anyhow::Error::msg)?;
        let (plus, minus, diff) = (overlaps.strings("plus"), overlaps.strings("minus"), overlaps.strings("diff"));
        let (plus, minus, diff) =
            (plus.map_err(anyhow::Error::msg)?, minus.map_err(anyhow::Error::msg)?, diff.map_err(anyhow::Error::msg)?);
        app_info!("Starting difference computations");
        let diffs: Vec<TaskFuture<Option<FilePath>>> = (0..overlaps.rows.len())
            .map(|i| {
                engine.submit::<MDiff>((
                    projections.join(plus[i]).into(),
                    projections.join(minus[i]).into(),
                    img_hdr.clone().into(),
                    diff_dir.join(diff[i]).into(),
                ))
            })
            .collect();
        let (done, failed) = gather(&diffs);
        let empty = done.iter().filter(|d| d.is_none()).count();
        if empty > 0 {
            tracing::info!("{} of {} overlapping pairs share no pixel (their outlines only touch)", empty, diffs.len());
        }
        if !failed.is_empty() {
            tracing::warn!(
                "{} of {} differences failed; the background fit goes on without them; the first: {}",
                failed.len(),
                diffs.len(),
                failed[0]
            );
        }
        app_info!("Differences completed");

        let corrections_tbl = engine.submit::<BgexecPrep>((
            (&images_tbl).into(),
            diffs_path.clone().into(),
            diff_dir.clone().into(),
            out.clone().into(),
        ));
        let corr_dir = out.join("corrections");
        std::fs::create_dir_all(&corr_dir)?;
        let corrections_path = corrections_tbl.result().map_err(|e| anyhow::anyhow!("bgexec_prep failed: {}", e))?;

        let corrections = Table::read(&corrections_path).map_err(anyhow::Error::msg)?;
        let ids: Vec<u64> = corrections.numbers("id").map_err(anyhow::Error::msg)?;
        let [a, b, c] = ["a", "b", "c"].map(|k| corrections.numbers::<f64>(k));
        let (a, b, c) =
            (a.map_err(anyhow::Error::msg)?, b.map_err(anyhow::Error::msg)?, c.map_err(anyhow::Error::msg)?);
        let images_path = images_tbl.result().map_err(|e| anyhow::anyhow!("mimgtbl failed: {}", e))?;
        let images = Table::read(&images_path).map_err(anyhow::Error::msg)?;
        let cntr: Vec<u64> = images.numbers("cntr").map_err(anyhow::Error::msg)?;
        let fname = images.strings("fname").map_err(anyhow::Error::msg)?;
        app_info!("Starting background computations");
        let backgrounds: Vec<TaskFuture<FilePath>> = cntr
            .iter()
            .zip(&fname)
            .map(|(&id, name)| {
                // mBgModel lists every image it solved for; one without overlaps keeps its level.
                let (a, b, c) = match ids.iter().position(|&i| i == id) {
                    Some(k) => (a[k], b[k], c[k]),
                    None => (0.0, 0.0, 0.0),
                };
                let input = projections.join(name);
                let base = Path::new(name).file_name().map(Path::new).unwrap_or(Path::new(name));
                engine.submit::<MBackground>((input.into(), corr_dir.join(base).into(), a.into(), b.into(), c.into()))
            })
            .collect();
        let (_, failed) = gather(&backgrounds);
        if !failed.is_empty() {
            anyhow::bail!(
                "{} of {} background corrections failed; the first: {}",
                failed.len(),
                backgrounds.len(),
                failed[0]
            );
        }
        app_info!("Backgrounds completed");

        let mosaic =
            engine.submit::<MAdd>(((&images_tbl).into(), img_hdr.into(), out.join(MOSAIC).into(), corr_dir.into()));
        let mosaic = mosaic.result().map_err(|e| anyhow::anyhow!("madd failed: {}", e))?;
        app_info!("Created output FITS file at {}", mosaic.display());
        self.mosaic = Some(mosaic.into());
        Ok(())
    }

    /// The PNG preview of the mosaic, after the timed part.
    fn save(&mut self, _run_dir: &Path) -> anyhow::Result<()> {
        let (Some(mosaic), true) = (&self.mosaic, self.opts.preview) else { return Ok(()) };
        let png = self.out.join(PREVIEW);
        let t = Instant::now();
        let dir = self.run_dir.join("tasks").join("mViewer");
        // Grey levels from 1σ below the median to the maximum, log-stretched: stars bright on a dark sky.
        let cmd =
            TaskCommand::new("mViewer").arg("-gray").arg(mosaic).args(["-1s", "max", "gaussian-log", "-png"]).arg(&png);
        montage(cmd, "mViewer", &dir).map_err(|e| anyhow::anyhow!("the preview failed: {}", e))?;
        app_info!("Wrote a preview of the mosaic to {} ({:.3}s)", png.display(), t.elapsed().as_secs_f64());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        let r = |p: &str, b: &str| relative_path(Path::new(p), Path::new(b));
        assert_eq!(r("/run/data/projections", "/run/tasks/ID"), Path::new("../../data/projections"));
        assert_eq!(r("/run/tasks/ID", "/run/tasks/ID"), Path::new("."));
        assert_eq!(r("/run/tasks/ID/x", "/run/tasks/ID"), Path::new("x"));
        assert_eq!(r("/a", "/b/c"), Path::new("../../a"));
    }
}
