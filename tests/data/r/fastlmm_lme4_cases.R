# lme4 reference fits for tests/test_fastlmm_reference.py.
# Data: statsmodels' lme00.csv..lme11.csv (copied from statsmodels/regression/tests/results, BSD licence),
# the same models as statsmodels' lme_results.R, written with full precision instead of 7 digits.
# Run from the repository root:  Rscript tests/data/r/fastlmm_lme4_cases.R
# Output: tests/data/r/fastlmm_lme4_cases.csv (case, method, rf, control, quantity, i, j, value)
suppressPackageStartupMessages(library(lme4))
dir <- "tests/data/r/fastlmm_lme"
files <- list.files(path = dir, pattern = "lme..\\.csv")
out <- list()
add <- function(case, meth, rf, ctl, what, m) {
  m <- as.matrix(m)
  for (i in seq_len(nrow(m))) for (j in seq_len(ncol(m))) {
    out[[length(out) + 1]] <<- data.frame(case = case, method = meth, rf = rf, control = ctl, quantity = what,
                                          i = i - 1, j = j - 1, value = sprintf("%.17g", m[i, j]))
  }
}
controls <- list(default = lmerControl(),
                 tight = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))
for (file in files) {
  data <- read.csv(file.path(dir, file))
  fe <- grep("exog_fe", names(data), value = TRUE)
  re <- grep("exog_re", names(data), value = TRUE)
  case <- as.integer(substr(file, 4, 5))
  for (irf in c(FALSE, TRUE)) {
    if (irf && length(re) == 1) next
    rf <- if (irf) "irf" else "drf"
    if (irf) {
      fml_re <- paste(sprintf("(0 + %s | groups)", re), collapse = " + ")
    } else {
      fml_re <- sprintf("(0 + %s | groups)", paste(re, collapse = " + "))
    }
    fml <- as.formula(sprintf("endog ~ 0 + %s + %s", paste(fe, collapse = " + "), fml_re))
    for (reml in c(FALSE, TRUE)) {
      meth <- if (reml) "reml" else "ml"
      for (ctl in names(controls)) {
        md <- suppressMessages(suppressWarnings(lmer(fml, data = data, REML = reml, control = controls[[ctl]])))
        add(case, meth, rf, ctl, "coef", fixef(md))
        add(case, meth, rf, ctl, "vcov", as.matrix(vcov(md)))
        vc <- VarCorr(md)
        if (irf) {
          cr <- diag(sapply(seq_along(re), function(k) as.numeric(vc[[k]])), nrow = length(re))
        } else {
          cr <- matrix(as.numeric(vc$groups), length(re), length(re))
        }
        add(case, meth, rf, ctl, "cov_re", cr)
        add(case, meth, rf, ctl, "scale", attr(vc, "sc")^2)
        add(case, meth, rf, ctl, "loglike", as.numeric(logLik(md)))
        add(case, meth, rf, ctl, "theta", getME(md, "theta"))
      }
    }
  }
}
res <- do.call(rbind, out)
write.csv(res, "tests/data/r/fastlmm_lme4_cases.csv", row.names = FALSE, quote = FALSE)
cat("lme4", as.character(packageVersion("lme4")), "R", R.version.string, "\n")
