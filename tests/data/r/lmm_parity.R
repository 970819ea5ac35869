# R reference for cohortflow's mixed-model layer (tests/test_analysis_r_parity.py).
# Input: lmm_dataset.csv (made by make_fixtures.py from cohortflow.analysis.simulate, seed fixed).
# Run:   Rscript lmm_parity.R <this folder>      (R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, emmeans 1.8.4-1 here)
# Output: r_<model>_{fixed,varcomp,fit,emmeans,contrasts}.csv for models
#   a: score ~ arm*wave + age_years + sex + (1|household_id) + (1|person_id) + (0 + months_since_t0|person_id)
#   b: score ~ arm*wave + age_years + sex + (1|household_id/person_id)      (nested intercepts, no slope)
#   c: score ~ arm*months_since_t0 + age_years + sex + (1|household_id) + (1|person_id) + (0 + months_since_t0|person_id)
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(emmeans)})
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args)) args[1] else "."
d <- read.csv(file.path(dir, "lmm_dataset.csv"), stringsAsFactors = FALSE)
arms <- c("proeftuin", "vt", "gi"); waves <- c("T0", "T1", "T2")
d$arm <- factor(d$arm, levels = arms)
d$wave <- factor(d$wave, levels = waves)
d$sex <- factor(d$sex)
out <- function(x, name) write.csv(x, file.path(dir, name), row.names = FALSE)

forms <- list(
  a = score ~ arm * wave + age_years + sex + (1 | household_id) + (1 | person_id) + (0 + months_since_t0 | person_id),
  b = score ~ arm * wave + age_years + sex + (1 | household_id / person_id),
  c = score ~ arm * months_since_t0 + age_years + sex + (1 | household_id) + (1 | person_id) + (0 + months_since_t0 | person_id)
)
for (nm in names(forms)) {
  m <- lmerTest::lmer(forms[[nm]], data = d, REML = TRUE,
                      control = lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
  fe <- summary(m, ddf = "Satterthwaite")$coefficients
  out(data.frame(term = rownames(fe), estimate = fe[, 1], se = fe[, 2], df = fe[, 3], t = fe[, 4], p = fe[, 5]),
      sprintf("r_%s_fixed.csv", nm))
  vc <- as.data.frame(VarCorr(m))
  out(data.frame(grp = vc$grp, var1 = vc$var1, variance = vc$vcov, sd = vc$sdcor), sprintf("r_%s_varcomp.csv", nm))
  out(data.frame(loglik = as.numeric(logLik(m)), sigma = sigma(m), reml = isREML(m), singular = isSingular(m),
                 nobs = nobs(m), versions = sprintf("R %s; lme4 %s; lmerTest %s; emmeans %s", getRversion(),
                 packageVersion("lme4"), packageVersion("lmerTest"), packageVersion("emmeans"))),
      sprintf("r_%s_fit.csv", nm))
  if (nm == "c") next
  emm <- emmeans(m, ~ arm * wave, lmer.df = "satterthwaite")
  s <- summary(emm)
  out(data.frame(arm = s$arm, wave = s$wave, emmean = s$emmean, se = s$SE, df = s$df, lower = s$lower.CL,
                 upper = s$upper.CL), sprintf("r_%s_emmeans.csv", nm))
  grid <- paste(s$arm, s$wave)
  cell <- function(a, w) as.numeric(grid == paste(a, w))
  cons <- list()
  for (a in arms) for (w in waves[-1]) cons[[sprintf("%s: %s - %s", a, w, waves[1])]] <- cell(a, w) - cell(a, waves[1])
  for (cmp in arms[-1]) for (w in waves[-1])
    cons[[sprintf("%s - %s: change %s to %s", arms[1], cmp, waves[1], w)]] <-
      (cell(arms[1], w) - cell(arms[1], waves[1])) - (cell(cmp, w) - cell(cmp, waves[1]))
  ct <- summary(contrast(emm, method = cons, adjust = "none"), infer = c(TRUE, TRUE))
  out(data.frame(contrast = ct$contrast, estimate = ct$estimate, se = ct$SE, df = ct$df, t = ct$t.ratio,
                 p = ct$p.value, lower = ct$lower.CL, upper = ct$upper.CL), sprintf("r_%s_contrasts.csv", nm))
}
