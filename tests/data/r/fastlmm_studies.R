# lme4 reference fits of simulated studies for tests/test_fastlmm_reference.py.
# Data: made by tests/data/r/fastlmm_make_study_data.py (cohortflow.analysis.fastlmm_sim, fixed seeds).
# Run from the repository root:  Rscript tests/data/r/fastlmm_studies.R
# Output: tests/data/r/fastlmm_studies.csv (model, method, quantity, name, value); lme4 with tight BOBYQA
# settings, since lme4's defaults stop about 1e-5 short of the optimum on variance components.
suppressPackageStartupMessages(library(lme4))
dir <- "tests/data/r"
ctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                   check.conv.singular = "ignore")
models <- list(
  growth_boundary_full = list(file = "fastlmm_growth_boundary.csv", f = y ~ time * group + (1 + time | subject)),
  growth_boundary_diag = list(file = "fastlmm_growth_boundary.csv",
                              f = y ~ time * group + (1 | subject) + (0 + time | subject)),
  growth_2000 = list(file = "fastlmm_growth_2000.csv", f = y ~ time * group + (1 + time | subject)),
  study_f1 = list(file = "fastlmm_study_f1.csv",
                  f = y1 ~ arm * time + (1 | household_id) + (1 + time | household_id:person_id)),
  study_f1_ctime = list(file = "fastlmm_study_f1_ctime.csv",
                        f = y1 ~ arm * time + (1 | household_id) + (1 + time | household_id:person_id))
)
out <- list()
add <- function(model, meth, what, names, values) {
  out[[length(out) + 1]] <<- data.frame(model = model, method = meth, quantity = what, name = names,
                                        value = sprintf("%.17g", values))
}
for (nm in names(models)) {
  m <- models[[nm]]
  data <- read.csv(file.path(dir, m$file))
  for (reml in c(TRUE, FALSE)) {
    meth <- if (reml) "reml" else "ml"
    t0 <- proc.time()[["elapsed"]]
    md <- lmer(m$f, data = data, REML = reml, control = ctl)
    add(nm, meth, "coef", names(fixef(md)), fixef(md))
    add(nm, meth, "se", names(fixef(md)), sqrt(diag(as.matrix(vcov(md)))))
    vc <- as.data.frame(VarCorr(md))
    add(nm, meth, "vcov", paste(vc$grp, vc$var1, vc$var2, sep = "/"), vc$vcov)
    add(nm, meth, "loglike", "logLik", as.numeric(logLik(md)))
    add(nm, meth, "theta", names(getME(md, "theta")), getME(md, "theta"))
    add(nm, meth, "singular", "isSingular", as.numeric(isSingular(md)))
  }
}
write.csv(do.call(rbind, out), file.path(dir, "fastlmm_studies.csv"), row.names = FALSE, quote = TRUE)
cat("lme4", as.character(packageVersion("lme4")), R.version.string, "\n")
