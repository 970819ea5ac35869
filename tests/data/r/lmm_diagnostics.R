# R reference for cohortflow's residual diagnostics (tests/test_analysis_diagnostics.py).
# Input: lmm_dataset.csv (made by make_fixtures.py). Run: Rscript lmm_diagnostics.R <this folder>
# (R 4.2.2, lme4 1.1-31). Models as in lmm_parity.R:
#   a: score ~ arm*wave + age_years + sex + (1|household_id) + (1|person_id) + (0 + months_since_t0|person_id)
#   b: score ~ arm*wave + age_years + sex + (1|household_id) + (1|person_id)
# Output per model: diag_<m>_resid.csv (person_id, wave, fitted, resid: lme4's fitted() and resid(), i.e.
# conditional on the BLUPs), diag_<m>_ranef.csv (term, level, blup: ranef()), diag_<m>_summary.csv (n, SD,
# moment skewness m3/m2^1.5, excess kurtosis m4/m2^2 - 3, % |standardised| > 3 with resid/sigma for the
# residuals and BLUP/SD(BLUPs) for the random effects).
suppressPackageStartupMessages({library(lme4)})
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args)) args[1] else "."
d <- read.csv(file.path(dir, "lmm_dataset.csv"), stringsAsFactors = FALSE)
d$arm <- factor(d$arm, levels = c("proeftuin", "vt", "gi"))
d$wave <- factor(d$wave, levels = c("T0", "T1", "T2"))
d$sex <- factor(d$sex)
out <- function(x, name) write.csv(x, file.path(dir, name), row.names = FALSE)
mom <- function(x) {
  dx <- x - mean(x); m2 <- mean(dx^2)
  c(sd = sd(x), skewness = mean(dx^3) / m2^1.5, excess_kurtosis = mean(dx^4) / m2^2 - 3)
}
forms <- list(
  a = score ~ arm * wave + age_years + sex + (1 | household_id) + (1 | person_id) + (0 + months_since_t0 | person_id),
  b = score ~ arm * wave + age_years + sex + (1 | household_id) + (1 | person_id)
)
for (nm in names(forms)) {
  m <- lmer(forms[[nm]], data = d, REML = TRUE, control = lmerControl(optimizer = "bobyqa",
                                                                       optCtrl = list(maxfun = 1e5)))
  r <- resid(m); s <- sigma(m)
  out(data.frame(person_id = d$person_id, wave = d$wave, fitted = fitted(m), resid = r), sprintf("diag_%s_resid.csv", nm))
  re <- ranef(m)
  rows <- list(); summ <- list()
  summ[[1]] <- data.frame(quantity = "conditional residuals", n = length(r), t(mom(r)),
                          pct_abs_std_gt_3 = 100 * mean(abs(r / s) > 3))
  for (g in names(re)) for (term in colnames(re[[g]])) {
    v <- re[[g]][[term]]
    rows[[length(rows) + 1]] <- data.frame(group = g, term = term, level = rownames(re[[g]]), blup = v)
    summ[[length(summ) + 1]] <- data.frame(quantity = paste(g, term), n = length(v), t(mom(v)),
                                           pct_abs_std_gt_3 = 100 * mean(abs(v / sd(v)) > 3))
  }
  out(do.call(rbind, rows), sprintf("diag_%s_ranef.csv", nm))
  out(do.call(rbind, summ), sprintf("diag_%s_summary.csv", nm))
}
